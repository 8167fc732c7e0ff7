"""Ctrl-C stops a running simulation within seconds, leaves no process, marks the run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fedforget.simulations.runner import RUN_FILE

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 10.0  # the promise to the user (issue 14)
START_TIMEOUT_S = 300.0  # Ray's start on a loaded two-core machine


def _session_members(session: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter():
        try:
            alive = process.status() != psutil.STATUS_ZOMBIE  # a zombie is already dead
            if os.getsid(process.pid) == session and process.pid != session and alive:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _wait_until_training(process: subprocess.Popen, out: Path) -> None:
    """Block until the federation finished a round (Ray and its actors are up)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    rounds = out / "rounds.jsonl"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended early: {process.stderr.read()[-2000:]}")
        if rounds.is_file() and rounds.read_text().strip():
            return
        time.sleep(0.2)
    pytest.fail("the run did not finish its first round in time")


@pytest.mark.parametrize("target", ["pid", "group", "sigterm"])
def test_sigint_stops_a_simulation_within_seconds(tmp_path: Path, target: str) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fedforget.cli", "simulate", "--dataset", "digits"]
    command += ["--clients", "3", "--rounds", "200", "--deletion-round", "199"]
    command += ["--client-cpus", "1", "--quiet", "--reference", "none", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        start_new_session=True,  # its own session: every descendant is found by session id
    )
    try:
        _wait_until_training(process, out)
        assert json.loads((out / RUN_FILE).read_text())["status"] == "running"
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "Ray's processes should be running"
        sent = time.monotonic()
        if target == "pid":
            process.send_signal(signal.SIGINT)
        elif target == "group":  # what Ctrl-C in a terminal does
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_WITHIN_S)
        stopped_after = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert stopped_after < STOP_WITHIN_S
    assert process.returncode == 130, process.stderr.read()[-2000:]
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not left, [c.cmdline() for c in left]
    assert not _session_members(process.pid)
    status = json.loads((out / RUN_FILE).read_text())
    assert status["status"] == "interrupted"


def test_flowers_ray_backend_lets_its_engine_threads_go_before_ray_shuts_down() -> None:
    """An interrupted engine's ``terminate`` must not shut Ray down under a thread that still
    waits on an actor (Ray's core worker would then end the process with exit code 1)."""
    from concurrent.futures import ThreadPoolExecutor

    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    from fedforget.simulations.runner import orderly_ray_termination

    events: list[str] = []

    class Pool:
        pool: list = []
        _future_to_actor: dict = {}

        def terminate_all_actors(self) -> None:
            events.append("actors terminated")

    class Backend:
        pool = Pool()

    def waiting_on_an_actor() -> None:
        time.sleep(0.5)
        events.append("engine thread done")

    with orderly_ray_termination(), ThreadPoolExecutor() as executor:
        executor.submit(waiting_on_an_actor)
        RayBackend.terminate(Backend())
    assert events == ["engine thread done", "actors terminated"]
