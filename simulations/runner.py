"""Run a fedforget experiment on Flower's simulation engine (Ray actors)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import build_federation, source_names
from fedforget.models import model_names
from fedforget.report.recorder import Display
from fedforget.report.summary import Summary
from fedforget.server.app import run_server
from fedforget.strategies.registry import (
    RETRAIN,
    build_configured_unlearner,
    check_client_side,
    check_strategy_name,
)
from fedforget.verification import build_verifier, verifier_names

T = TypeVar("T")


class SimulationError(RuntimeError):
    """The simulation engine stopped before the run finished."""


def check_run(config: SimulationConfig) -> None:
    """Every check that needs the registries or the data, before Ray starts.

    Raises
    ------
    ConfigError
        Unknown dataset, model or strategy; a forget class out of range; deleting more than
        the deleting clients hold; an unreadable custom dataset.
    """
    if config.data.dataset not in source_names():
        raise ConfigError(
            f"unknown dataset '{config.data.dataset}'; choose one of: {', '.join(source_names())}"
        )
    if config.model not in model_names():
        raise ConfigError(
            f"unknown model '{config.model}'; choose one of: {', '.join(model_names())}"
        )
    if config.deletion.mode == "requests":
        raise ConfigError(
            "mode 'requests' carries out deletions users file on real nodes "
            "(fedforget request-deletion); run it on a deployment with flwr run"
        )
    if config.task == "gan":
        check_gan_strategies(config, [config.strategy])
    else:
        check_strategies(config, [config.strategy])
    try:
        build_federation(config)
    except ConfigError:
        raise
    except ValueError as err:  # DataError and friends: one line for the user
        raise ConfigError(str(err).splitlines()[0]) from None


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


def check_gan_strategies(config: SimulationConfig, names: list[str]) -> None:
    """Known GAN-task strategies whose options their unlearner accepts (else ConfigError)."""
    from fedforget.gan.cascaded import check_substitute
    from fedforget.strategies.gan import RETRAIN as GAN_RETRAIN
    from fedforget.strategies.gan import build_configured_gan_unlearner

    if config.verify.method != "none":
        raise ConfigError("--verify checks a classifier; the GAN task measures its own metrics")
    mode = "class" if config.deletion.mode == "class" else "item"
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
        build_verifier(method, **config.methods.options.get(method, {}))
    unused = [n for n in config.methods.options if n in verifier_names() and n != method]
    if unused:
        raise ConfigError(f"options for verifier '{unused[0]}' but --verify is {method}")


def backend_config(config: SimulationConfig) -> dict[str, Any]:
    """Ray resources: each client actor gets ``client_cpus`` CPUs and ``client_gpus`` GPUs."""
    return {
        "client_resources": {
            "num_cpus": config.resources.client_cpus,
            "num_gpus": config.resources.client_gpus,
        },
        "init_args": {
            "logging_level": "ERROR",
            "log_to_driver": False,
            "include_dashboard": False,
            "num_cpus": os.cpu_count() or 1,
        },
    }


def simulate(config: SimulationConfig, display: Display | None = None) -> Summary:
    """Run the configured experiment and return its summary (also written to disk).

    The ServerApp runs in a thread of this process (so it can update ``display``); the
    clients run in Ray actors.
    """
    check_run(config)
    return run_on_simulation_engine(config, lambda grid: run_server(grid, config, display))


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

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=config.clients,
        backend_config=backend_config(config),
    )
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise SimulationError("the Flower simulation stopped before the run finished")
    return outcome["result"]


def _quiet_flower() -> None:
    # run_simulation's deprecation notice and FedAvg's "evaluation skipped" notice would
    # break the live display; errors still show.
    logging.getLogger("flwr").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
