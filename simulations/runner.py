"""Run a fedforget experiment on Flower's simulation engine (Ray actors).

A run folder says whether its run finished: ``run.json`` is written with ``"status":
"running"`` before the run starts and rewritten ``complete``, ``interrupted`` (Ctrl-C,
SIGTERM) or ``failed`` when it ends. A folder holding an earlier run is refused unless the
caller allows overwriting it, so two runs never mix in one folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedforget.attacks import attack_names
from fedforget.attacks_reference import check_reference_data
from fedforget.clients.policy import simulation_environment
from fedforget.config import (
    ConfigError,
    SimulationConfig,
    check_data_dir,
    check_device,
    check_writable_folder,
)
from fedforget.data import build_federation, source_names
from fedforget.models import MODEL_REGISTRY, ClassifierModel, build_model, model_names
from fedforget.registry import load_plugins
from fedforget.report.recorder import Display
from fedforget.report.summary import Summary
from fedforget.server.app import default_out_dir, run_server
from fedforget.simulations.linkstate import per_node_message_lookup
from fedforget.stopping import RunStoppedError, clear_stop, request_stop
from fedforget.strategies.registry import (
    RETRAIN,
    build_configured_unlearner,
    check_client_side,
    check_strategy_name,
)
from fedforget.unlearning import unlearner_names
from fedforget.verification import build_verifier, verifier_names

T = TypeVar("T")

RUN_FILE = "run.json"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
WORKER_NICENESS_ENV = "RAY_worker_niceness"
INLINE_LIMIT_ENV = "RAY_max_direct_call_object_size"
INLINE_LIMIT_BYTES = 8 * 2**20  # a model of up to 8 MiB (ResNet-32: 1.9 MiB) travels inline
HEAD_NODE_TIMEOUT = 10.0  # seconds to wait for a Ray head node to accept a connection
EARLIER_RUN_FILES = (
    RUN_FILE,
    "summary.json",
    "rounds.jsonl",
    "model.pt",
    "reference_model.pt",
    "metrics.png",
    "samples.png",
    "checkpoint.pt",
    "generator.pt",
    "compare.csv",
    "compare.json",
    "compare.md",
    "compare.png",
    "gan_compare.csv",
    "gan_compare.json",
    "gan_compare.md",
)
EARLIER_RUN_FOLDERS = ("verification", "models")
EARLIER_RUN_PATTERNS = ("gan-*.pt",)


class SimulationError(RuntimeError):
    """The simulation engine stopped before the run finished."""


def check_run(config: SimulationConfig) -> None:
    """Every check that needs the registries or the data, before Ray starts.

    Raises
    ------
    ConfigError
        Unknown dataset, model or strategy; a forget class out of range; deleting more than
        the deleting clients hold; an unreadable custom dataset; a device this machine lacks;
        a dataset cache folder that is a file; a ``--ray-address`` where no head node answers.
    """
    check_names(config)
    if config.deletion_mode.node_side:
        raise ConfigError(
            f"mode '{config.deletion.mode}' carries out deletions users file on real nodes "
            "(fedforget request-deletion); run it on a deployment with flwr run"
        )
    check_device(config.resources.server_device, "--server-device")
    if (address := ray_address(config)) is not None:
        check_head_node(address)
    check_data_dir(config.data.data_dir)
    try:
        build_federation(config)
    except ConfigError:
        raise
    except ValueError as err:  # DataError and friends: one line for the user
        raise ConfigError(str(err).splitlines()[0]) from None
    check_model_parts(config, [config.strategy])


def check_model_parts(config: SimulationConfig, names: list[str]) -> None:
    """Refuse a plain ``nn.Module`` model for a method that needs ClassifierModel parts.

    A registered ClassifierModel subclass has every part; any other model is built once on
    the federation's shapes and checked against each method's ``model_needs``.
    """
    factory = MODEL_REGISTRY.lookup(config.model)
    if isinstance(factory, type) and issubclass(factory, ClassifierModel):
        return
    methods = [n for n in names if n != RETRAIN and n in unlearner_names()]
    if not methods:
        return
    federation = build_federation(config)
    model = build_model(
        config.model, federation.num_classes, federation.in_channels, federation.image_size
    )
    for name in methods:
        build_configured_unlearner(config, name).check_model(model)


def check_names(config: SimulationConfig) -> None:
    """The checks that need only the registries (no data, no device): names and options.

    ``fedforget run-config`` runs these too, so a deployment's configuration is checked
    before it is submitted. The configuration's plugins are imported first: their names are
    among those checked.
    """
    load_plugins(config.plugins)
    if config.data.dataset not in source_names():
        raise ConfigError(
            f"unknown dataset '{config.data.dataset}'; choose one of: {', '.join(source_names())}"
        )
    if config.model not in model_names():
        raise ConfigError(
            f"unknown model '{config.model}'; choose one of: {', '.join(model_names())}"
        )
    if config.mia is not None and config.mia not in attack_names():
        raise ConfigError(
            f"unknown membership attack '{config.mia}'; choose one of: {', '.join(attack_names())}"
        )
    if config.task == "gan":
        check_gan_strategies(config, [config.strategy])
    else:
        check_strategies(config, [config.strategy])
        refusal = mode_refusal(config, config.strategy)
        if refusal is not None:
            raise ConfigError(refusal)


def mode_refusal(config: SimulationConfig, name: str) -> str | None:
    """Why strategy ``name`` does not carry out the configured deletion mode (``None``: it
    does). Node-side requests (``requests`` mode) take their mode from what users file, so
    they are checked at the deletion itself."""
    if name == RETRAIN or config.deletion_mode.node_side:
        return None
    return build_configured_unlearner(config, name).refusal(config.deletion_mode)


def check_strategies(config: SimulationConfig, names: list[str]) -> None:
    """Known strategy names, and options that each method accepts (else :class:`ConfigError`)."""
    verifiers = verifier_names()
    for name in dict.fromkeys([*names, *config.methods.options]):
        if name in verifiers and name not in names:
            continue
        check_strategy_name(name)
        if name != RETRAIN:
            build_configured_unlearner(config, name)
    check_verifier(config)
    if config.unlearn_on == "client" and config.strategy != RETRAIN:
        check_client_side(build_configured_unlearner(config, config.strategy))
    check_reference_data(config)  # --mia calibrated: data for its reference models


def check_gan_strategies(config: SimulationConfig, names: list[str]) -> None:
    """Known GAN-task strategies whose options their unlearner accepts (else ConfigError)."""
    from fedforget.gan.cascaded import check_substitute
    from fedforget.strategies.gan import RETRAIN as GAN_RETRAIN
    from fedforget.strategies.gan import build_configured_gan_unlearner

    if config.verify.method != "none":
        raise ConfigError("--verify checks a classifier; the GAN task measures its own metrics")
    mode = config.deletion_mode.gan_mode
    for name in dict.fromkeys([*names, *config.methods.options]):
        if name == GAN_RETRAIN:
            continue
        unlearner = build_configured_gan_unlearner(config, name)
        substitute = getattr(unlearner.settings, "substitute", None)
        if substitute is not None:
            try:
                check_substitute(substitute, mode)
            except ValueError as err:
                raise ConfigError(f"{name}: {err}") from None


def check_verifier(config: SimulationConfig) -> None:
    """A known ``--verify`` method whose options (``--option NAME.KEY=VALUE``) it accepts."""
    method = config.verify.method
    if method != "none":
        verifier = build_verifier(method, **config.methods.options.get(method, {}))
        verifier.check_mode(config.deletion_mode)
    unused = [n for n in config.methods.options if n in verifier_names() and n != method]
    if unused:
        raise ConfigError(f"options for verifier '{unused[0]}' but --verify is {method}")


def ray_address(config: SimulationConfig) -> str | None:
    """The Ray cluster the client actors run on: ``--ray-address``, else ``RAY_ADDRESS``.

    None: the run starts a private Ray instance on this machine. ``RAY_ADDRESS`` is the
    variable ``ray.init`` itself follows, so a shell set up for a cluster attaches the same way.
    """
    return config.resources.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None


def private_instance_environment() -> dict[str, str]:
    """Ray's workers run at the user's priority, unless the user set Ray's own variable.

    Ray starts its worker processes at nice 15, as background work; in a simulation the
    client actors *are* the work, and at nice 15 any other job on the machine (a test suite's
    neighbour on a shared CI runner) takes their cores while the server waits for them.
    """
    return {WORKER_NICENESS_ENV: os.environ.get(WORKER_NICENESS_ENV, "0")}


def message_transport_environment() -> dict[str, str]:
    """Ray carries a Flower message inside the actor call, unless the user set Ray's variable.

    Ray inlines a task's arguments and return value up to 100 KiB and writes anything larger
    to its shared-memory object store. Every message with a model crosses that limit (LeNet-5:
    250 KiB), so each message and each reply paid a store write, a fetch and the raylet's
    bookkeeping, in the driver and the raylet, whose CPU the client actors need. The store
    buys nothing here: Flower serialises each message for one actor, which reads it once.
    Inlined up to :data:`INLINE_LIMIT_BYTES`, a 300-client round took 13-22 % less time
    (docs/results.md, "Scale"); larger models keep the store.
    """
    return {INLINE_LIMIT_ENV: os.environ.get(INLINE_LIMIT_ENV, str(INLINE_LIMIT_BYTES))}


def backend_config(config: SimulationConfig) -> dict[str, Any]:
    """Ray resources: each client actor gets ``client_cpus`` CPUs and ``client_gpus`` GPUs.

    A private instance gets this machine's cores; a cluster brings its own (Ray refuses
    ``num_cpus`` when it attaches).
    """
    init_args: dict[str, Any] = {
        "logging_level": "ERROR",
        "log_to_driver": False,
        "include_dashboard": False,
    }
    address = ray_address(config)
    if address is None:
        # "local": a new instance even where an earlier `ray start` left its address behind
        init_args.update(address="local", num_cpus=os.cpu_count() or 1)
    else:
        init_args["address"] = address
    return {
        "client_resources": {
            "num_cpus": config.resources.client_cpus,
            "num_gpus": config.resources.client_gpus,
        },
        "init_args": init_args,
    }


def attach_to_cluster(address: str, environment: dict[str, str]) -> None:
    """Connect this process to the Ray cluster at ``address`` before Flower's engine starts.

    Flower's Ray backend calls ``ray.init`` only when Ray is not connected yet, and gives the
    workers nothing but ``PYTHONPATH``. On a cluster the workers are children of the cluster's
    raylets, not of this process, so ``environment`` (the variables that let the nodes import
    the run's plugins and use its folders) travels in the job's runtime environment.

    Raises
    ------
    ConfigError
        No Ray cluster answers at ``address``.
    """
    import ray

    check_head_node(address)
    paths = [*sys.path, *filter(None, [os.environ.get("PYTHONPATH")])]
    variables = {**environment, "PYTHONPATH": os.pathsep.join(paths)}
    try:  # RAY_ADDRESS would override the address given to ray.init: it must say the same
        with _environment({RAY_ADDRESS_ENV: address}):
            ray.init(
                address=address,
                runtime_env={"env_vars": variables},
                logging_level="ERROR",
                log_to_driver=False,
            )
    except (ConnectionError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        message = f"--ray-address {address}: cannot attach to a Ray cluster ({reason})"
        raise ConfigError(message) from None


def check_head_node(address: str, timeout: float = HEAD_NODE_TIMEOUT) -> None:
    """Raise :class:`ConfigError` unless something accepts connections at ``address``.

    ``ray.init`` retries an address where nothing listens for minutes before it gives up;
    a refused or unanswered connection is the user's mistake, said at once. ``auto`` is
    left to Ray, which fails fast when it finds no cluster.
    """
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        message = f"--ray-address {address}: no Ray head node answers there ({reason})"
        raise ConfigError(message) from None


def simulate(config: SimulationConfig, display: Display | None = None) -> Summary:
    """Run the configured experiment and return its summary (also written to disk).

    The ServerApp runs in a thread of this process (so it can update ``display``); the
    clients run in Ray actors.
    """
    check_run(config)
    if config.out is None:  # one folder for the server and the nodes' verification pictures
        config = config.model_copy(update={"out": default_out_dir(config)})
    return run_on_simulation_engine(config, lambda grid: run_server(grid, config, display))


def earlier_run(folder: Path) -> list[Path]:
    """The files and folders of an earlier run in ``folder`` (empty: none)."""
    if not folder.is_dir():
        return []
    found = [folder / name for name in (*EARLIER_RUN_FILES, *EARLIER_RUN_FOLDERS)]
    found += [path for pattern in EARLIER_RUN_PATTERNS for path in sorted(folder.glob(pattern))]
    return [path for path in found if path.exists() or path.is_symlink()]


def check_run_folder(folder: Path, overwrite: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``folder`` can take a new run (creates nothing).

    A folder holding an earlier run is refused unless ``overwrite``: two runs must never mix
    in one folder.
    """
    check_writable_folder(folder)
    earlier = earlier_run(folder)
    if earlier and not overwrite:
        raise ConfigError(
            f"--out {folder} holds an earlier run ({earlier[0].name}); "
            "choose another folder or pass --overwrite"
        )


def prepare_run_folder(folder: Path, overwrite: bool = False) -> None:
    """Check ``folder`` (:func:`check_run_folder`), remove an earlier run, mark it ``running``.

    With ``overwrite`` only the earlier run's own files are removed; nothing else in the
    folder is touched.
    """
    check_run_folder(folder, overwrite)
    try:
        for path in earlier_run(folder):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        write_run_status(folder, "running")
    except OSError as err:
        raise ConfigError(f"--out {folder}: cannot write there ({err.strerror or err})") from None


def write_run_status(folder: Path, status: str) -> None:
    """Write ``run.json``: the run's status, the command and when it was last updated."""
    path = folder / RUN_FILE
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(path.read_text())
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "status": status,
        "started": previous.get("started", now) if status != "running" else now,
        "updated": now,
        "command": sys.argv[1:],
    }
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def run_folder(folder: Path, overwrite: bool = False) -> Iterator[Path]:
    """Mark ``folder`` running for the block; complete, interrupted or failed after it."""
    prepare_run_folder(folder, overwrite)
    try:
        yield folder
    except (KeyboardInterrupt, RunStoppedError):
        write_run_status(folder, "interrupted")
        raise
    except BaseException:
        write_run_status(folder, "failed")
        raise
    write_run_status(folder, "complete")


def run_on_simulation_engine(config: SimulationConfig, server_main: Callable[[Grid], T]) -> T:
    """Run ``server_main(grid)`` as the ServerApp of a Flower simulation; return its result.

    The ServerApp runs in a thread of this process (so it can update a live display); the
    clients are :mod:`fedforget.clients.app` in Ray actors. An exception in ``server_main``
    is re-raised here, in the caller's thread.
    """
    _quiet_flower()
    outcome: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            outcome["result"] = server_main(grid)
        except BaseException as err:  # re-raised below, in the caller's thread
            outcome["error"] = err
            raise

    from fedforget.clients.app import app as client_app

    clear_stop()
    environment = {**simulation_environment(config, config.out), **message_transport_environment()}
    address = ray_address(config)
    private = private_instance_environment() if address is None else {}
    with _environment({**environment, **private}):
        if address is not None:
            attach_to_cluster(address, environment)
        try:
            with per_node_message_lookup(), orderly_ray_termination():
                run_simulation(
                    server_app=server_app,
                    client_app=client_app,
                    num_supernodes=config.clients,
                    backend_config=backend_config(config),
                )
        except (KeyboardInterrupt, SystemExit):  # Ray's SIGTERM handler raises SystemExit
            request_stop()  # the ServerApp thread stops waiting for replies
            shutdown_ray()
            raise KeyboardInterrupt from None
        finally:
            if address is not None:
                shutdown_ray()  # leaves the cluster; its own processes keep running
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise SimulationError("the Flower simulation stopped before the run finished")
    return outcome["result"]


TERMINATION_WAIT_S = 5.0
"""Seconds Flower's engine threads get to let go of Ray before it shuts down (an interrupt)."""
ENGINE_WORKERS = "ThreadPoolExecutor"
"""Name prefix of the threads in which Flower 1.41-1.42's engine (``vce_api.run_api``) hands
messages to the client actors: the only ones that wait on Ray."""


@contextlib.contextmanager
def orderly_ray_termination() -> Iterator[None]:
    """Let Flower's engine threads let go of Ray before its backend shuts Ray down.

    An interrupt raised in the main thread ends Flower's engine with its ``RayBackend.
    terminate``, which calls ``ray.shutdown()`` while the engine's worker threads may still
    wait on a client actor; the next call such a thread makes into Ray makes Ray's core
    worker end the whole process with exit code 1 ("The core worker has already been
    shutdown ... The process will exit"), before the run folder is marked interrupted (seen
    once in CI on SIGTERM). In the block, ``terminate`` first kills the pool's actors (a
    thread waiting on one gets an error, which Flower reports as that message's error) and
    joins the engine's worker threads (:data:`ENGINE_WORKERS`, at most
    :data:`TERMINATION_WAIT_S` seconds; they end once the engine's stop event is set, as it is
    before ``terminate``), then shuts Ray down as Flower does. A run that ends normally has
    no such thread left.
    """
    try:
        from flwr.server.superlink.fleet.vce.backend import raybackend
    except ImportError:  # pragma: no cover - flwr[simulation] installs Ray
        yield
        return
    import threading

    before = set(threading.enumerate())
    terminate = raybackend.RayBackend.terminate

    def orderly_terminate(backend: Any) -> None:
        pool = backend.pool
        if pool is not None:
            actors = [*pool.pool, *pool._future_to_actor.values()]
            for actor in actors:
                with contextlib.suppress(Exception):
                    raybackend.ray.kill(actor, no_restart=True)
        deadline = time.monotonic() + TERMINATION_WAIT_S
        for thread in set(threading.enumerate()) - before:
            if thread.name.startswith(ENGINE_WORKERS) and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        terminate(backend)

    raybackend.RayBackend.terminate = orderly_terminate
    try:
        yield
    finally:
        raybackend.RayBackend.terminate = terminate


def _quiet_flower() -> None:
    # run_simulation's deprecation notice and FedAvg's "evaluation skipped" notice would
    # break the live display; errors still show.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's native failure handler would take SIGTERM from Python and abort the process, so
    # `kill` could not mark the run folder interrupted (fedforget.cli handles SIGTERM).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (inherited by the Ray workers it starts)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def shutdown_ray() -> None:
    """Stop Ray (its actors and helper processes) if the simulation left it running."""
    try:
        import ray
    except ImportError:  # pragma: no cover - flwr[simulation] installs it
        return
    with contextlib.suppress(Exception):
        if ray.is_initialized():
            ray.shutdown()
