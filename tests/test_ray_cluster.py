"""A simulation attached to an existing Ray cluster (``--ray-address``).

The test starts its own head node (``ray start --head --block`` in a session of its own, with
its own temp folder and free ports), runs ``fedforget simulate`` on digits against it, and asks
the cluster which driver ran and which actors it started. The head node is stopped by
signalling the ``ray start`` process it launched (never ``ray stop``, which would stop every
Ray instance on the machine, other runs' included), and the test checks that no process of
that cluster is left.

Timeouts are multiples of ``client_round_seconds`` (conftest), the measured time of one
client's round on this machine, so a slow or busy machine waits longer instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fedforget.config import ConfigError, validate_config
from fedforget.simulations.runner import (
    INLINE_LIMIT_BYTES,
    INLINE_LIMIT_ENV,
    WORKER_NICENESS_ENV,
    backend_config,
    ray_address,
)

pytestmark = pytest.mark.slow

# the `ray` and `fedforget` commands of this Python environment, even when it is not activated
BIN = Path(sys.executable).parent
RAY = BIN / "ray" if (BIN / "ray").exists() else Path(shutil.which("ray") or "ray")
READY_LINE = "Ray runtime started"

# Run in a fresh interpreter attached to the cluster: its drivers (jobs) and actors, as JSON.
_CLUSTER_RECORD = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
jobs = [{"id": j["JobID"], "pid": j["DriverPid"]} for j in state.jobs()]
actors = [{"class": a["ActorClassName"], "job": a["JobID"]} for a in state.actors().values()]
print(json.dumps({"jobs": jobs, "actors": actors}))
ray.shutdown()
"""


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cluster_processes(temp_dir: Path) -> list[psutil.Process]:
    """Processes of the cluster whose files live in ``temp_dir`` (their command lines say so)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(temp_dir) in part for part in process.info["cmdline"] or []):
                found.append(process)
    return found


@contextlib.contextmanager
def ray_head(start_timeout: float) -> Iterator[tuple[str, Path]]:
    """A local Ray head node for the block: yields its address and its temp folder."""
    # Ray's socket paths sit under the temp folder and must stay short (108 bytes on Linux).
    temp_dir = Path(tempfile.mkdtemp(prefix="ffray", dir="/tmp"))
    log = temp_dir / "head.log"
    port = free_port()
    command = [
        str(RAY),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=2",
        "--disable-usage-stats",
        "--include-dashboard=false",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--block",
    ]
    # the cluster's workers at the test's priority, as fedforget's private instance does
    environment = {**os.environ, WORKER_NICENESS_ENV: "0"}
    with log.open("w") as output:
        head = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environment,
        )
    try:
        wait_for_head(head, log, start_timeout)
        yield f"127.0.0.1:{port}", temp_dir
    finally:
        stop_head(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_head(head: subprocess.Popen, log: Path, timeout: float) -> None:
    """Return once ``ray start`` says the runtime started; fail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while READY_LINE not in log.read_text(errors="replace"):
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"ray start not ready after {timeout:.0f} s:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop_head(head: subprocess.Popen, temp_dir: Path) -> None:
    """Stop the head node this test started, and anything its processes left behind.

    ``ray start --block`` stops the processes it started on SIGTERM; what remains in its
    process group, or still names its temp folder, is killed by process id.
    """
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(head.pid, signal.SIGKILL)
    leftovers = cluster_processes(temp_dir)
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(leftovers, timeout=30)


def cluster_record(address: str, timeout: float) -> dict:
    """The drivers (jobs) and actors the cluster at ``address`` has seen."""
    done = subprocess.run(
        [sys.executable, "-c", _CLUSTER_RECORD, address],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_simulate_runs_on_an_existing_ray_cluster(tmp_path: Path, client_round_seconds: float):
    unit = client_round_seconds
    out = tmp_path / "run"
    command = [
        *(sys.executable, "-m", "fedforget.cli", "simulate"),
        *("--dataset", "digits", "--clients", "3", "--rounds", "2", "--deletion-round", "1"),
        *("--reference", "none", "--local-epochs", "1", "--max-hops", "1", "--quiet"),
        *("--out", str(out)),
    ]
    with ray_head(start_timeout=max(60.0, 20 * unit)) as (address, temp_dir):
        run = subprocess.Popen([*command, "--ray-address", address])
        try:
            assert run.wait(timeout=max(300.0, 60 * unit)) == 0
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        record = cluster_record(address, timeout=max(60.0, 20 * unit))
        assert cluster_processes(temp_dir), "the head node's processes should be running"
    assert not cluster_processes(temp_dir), "stopping the head node left processes behind"

    drivers = [job for job in record["jobs"] if job["pid"] == run.pid]
    assert len(drivers) == 1, f"the run's driver (pid {run.pid}) is not a job of the cluster"
    clients = [a for a in record["actors"] if a["class"] == "ClientAppActor"]
    assert clients and all(a["job"] == drivers[0]["id"] for a in clients)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["timings"]["round_seconds"]) == 2
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("address", ["auto", "127.0.0.1:6379", "head.cluster.local:10001"])
def test_ray_address_accepts_auto_and_host_port(address: str):
    config = validate_config({"resources": {"ray_address": address}})
    assert ray_address(config) == address
    assert "num_cpus" not in backend_config(config)["init_args"]  # the cluster has its own


@pytest.mark.parametrize("address", ["", "head", "head:", "head:0", "head:70000", "ray://x"])
def test_ray_address_rejects_what_is_not_an_address(address: str):
    with pytest.raises(ConfigError, match="ray_address"):
        validate_config({"resources": {"ray_address": address}})


def test_without_an_address_the_run_starts_a_private_instance(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = validate_config({})
    init_args = backend_config(config)["init_args"]
    assert ray_address(config) is None
    assert init_args["address"] == "local"  # not a cluster an earlier `ray start` left behind
    assert init_args["num_cpus"] >= 1


USER_SETTINGS = [
    (None, {WORKER_NICENESS_ENV: "0", INLINE_LIMIT_ENV: str(INLINE_LIMIT_BYTES)}),
    ({WORKER_NICENESS_ENV: "5", INLINE_LIMIT_ENV: "4096"}, None),  # the user's own settings
]


@pytest.mark.parametrize(("user", "expected"), USER_SETTINGS)
def test_a_private_instance_sets_rays_variables_unless_the_user_did(monkeypatch, user, expected):
    """Ray's workers default to nice 15: the client actors would yield to any other job; its
    100 KiB inline limit put every message with a model through the object store."""
    from fedforget.simulations import runner

    variables = (WORKER_NICENESS_ENV, INLINE_LIMIT_ENV)
    for name in variables:
        if user is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, user[name])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    seen = {}

    class EngineCalledError(Exception):
        pass

    def engine(**kwargs):  # stands in for Flower's engine: what would Ray's raylet inherit?
        seen.update({name: os.environ.get(name) for name in variables})
        raise EngineCalledError

    monkeypatch.setattr(runner, "run_simulation", engine)
    config = validate_config({"data": {"dataset": "digits"}})
    with pytest.raises(EngineCalledError):
        runner.run_on_simulation_engine(config, lambda grid: None)
    assert seen == (expected or user)
    for name in variables:  # restored afterwards
        assert os.environ.get(name) == (None if user is None else user[name])


def test_ray_address_variable_attaches_like_the_option(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    config = validate_config({})
    assert ray_address(config) == "10.0.0.5:6379"
    assert "num_cpus" not in backend_config(config)["init_args"]


def test_a_bad_ray_address_is_one_line_and_exit_2(tmp_path: Path, capsys):
    from fedforget.cli import main

    args = ["simulate", "--dataset", "digits", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as info:
        main([*args, "--ray-address", "head-without-port"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert len(err.splitlines()) == 1 and "ray_address" in err
    assert not (tmp_path / "run").exists()


def test_an_address_where_no_head_node_listens_is_a_user_error():
    from fedforget.simulations.runner import attach_to_cluster

    started = time.monotonic()
    with pytest.raises(ConfigError, match="no Ray head node answers"):
        attach_to_cluster(f"127.0.0.1:{free_port()}", {})
    assert time.monotonic() - started < 30  # not Ray's minutes of retries


def test_compare_checks_the_ray_address_before_it_creates_the_run_folder(tmp_path: Path, capsys):
    from fedforget.cli import main

    out = tmp_path / "run"
    args = ["compare", "--dataset", "digits", "--clients", "3", "--out", str(out)]
    with pytest.raises(SystemExit) as info:
        main([*args, "--ray-address", f"127.0.0.1:{free_port()}"])
    assert info.value.code == 2
    assert "no Ray head node answers" in capsys.readouterr().err
    assert not out.exists()
