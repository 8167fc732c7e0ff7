"""A real Flower deployment on this machine: one SuperLink, N SuperNodes, ``flwr run``.

Used by the integration tests and for trying the deployment path by hand. Every process runs
in insecure mode on the loopback interface, in its own process group, and is stopped on exit
(SuperNodes first, then the SuperLink; whatever is left is killed), even when the body of the
``with`` block fails, and at interpreter exit should the block never end. ``FLWR_HOME``
points into the work directory, so nothing is written to the user's ``~/.flwr``. Production
deployments should use Flower's TLS and node authentication instead of ``--insecure`` (see
docs/deployment.md).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["DeploymentError", "LocalDeployment", "RunOutcome", "stage_app"]

FEDERATION = "local-deployment"
# Every process of a deployment carries this variable (with the deployment's id) in its
# environment: Flower detaches some of its children (the SuperLink's SuperExec starts a
# session of its own), so process groups alone do not reach every process to stop.
MARKER = "FEDFORGET_DEPLOYMENT"
APP_PARTS = ("fedforget", "clients", "server", "strategies", "simulations")


class DeploymentError(RuntimeError):
    """A deployment process did not start, or a run did not finish in time."""


@dataclass(frozen=True)
class RunOutcome:
    """How a ``flwr run`` ended: ``status`` is Flower's (``finished:completed``, ...)."""

    run_id: int | None
    status: str
    details: str
    seconds: float
    log: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stage_app(destination: Path) -> Path:
    """Copy this source checkout's Flower App (pyproject and packages) to ``destination``.

    ``flwr run`` may rewrite the app's ``pyproject.toml`` (configuration migration), so it is
    pointed at a copy, never at the checkout.
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise DeploymentError(f"{root} is not a fedforget source checkout")
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "pyproject.toml", destination / "pyproject.toml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in APP_PARTS:
        shutil.copytree(root / part, destination / part, ignore=ignore, dirs_exist_ok=True)
    return destination


class LocalDeployment:
    """A SuperLink and SuperNodes on localhost, one SuperNode per node directory.

    Parameters
    ----------
    workdir : Path
        Holds ``flwr-home/`` and the processes' logs.
    node_dirs : list of Path
        One SuperNode per directory, with ``node_config`` ``partition-id=i`` and
        ``node-dir='<dir>'``.
    start_timeout : float
        Seconds to wait for every SuperNode to be online.
    """

    def __init__(self, workdir: Path, node_dirs: list[Path], start_timeout: float = 90.0) -> None:
        self.workdir = Path(workdir)
        self.node_dirs = [Path(d) for d in node_dirs]
        self.start_timeout = start_timeout
        self.port = free_port()
        self.home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []
        self.marker = uuid.uuid4().hex
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            MARKER: self.marker,
            # the SuperLink starts ``flower-superexec`` by name: find it beside this Python
            # even when its environment is not activated
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        self._logs: list[IO[str]] = []
        # stop() and kill_node() may run on different threads (a test kills a node from a
        # watcher thread while the run ends): the lock keeps them from racing on the lists.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> LocalDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n'
            f'[superlink.{FEDERATION}]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        try:
            self.superlink = self._start(
                "superlink",
                [
                    _tool("flower-superlink"),
                    "--insecure",
                    "--disable-runtime-dependency-installation",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
            )
            for index, node_dir in enumerate(self.node_dirs):
                self.supernodes.append(self._start_node(index, node_dir))
            self.wait_for_nodes(len(self.node_dirs))
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        self._logs.append(log)
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.workdir,
            start_new_session=True,  # its own process group: its children stop with it
        )

    def _start_node(self, index: int, node_dir: Path) -> subprocess.Popen:
        config = f"partition-id={index} node-dir='{node_dir}'"
        return self._start(
            f"supernode{index}",
            [
                _tool("flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                "--node-config",
                config,
            ],
        )

    def stop(self) -> None:
        """Stop the SuperNodes, then the SuperLink; kill what does not stop in 10 s.

        Each process group gets a SIGKILL after its SIGTERM grace period, even when its
        leader exited, so the ClientApp and ServerApp processes they started go too; then
        every process left that carries this deployment's marker (Linux) is killed.
        """
        with self._lock:
            groups = (self.supernodes, [self.superlink] if self.superlink else [])
            self.supernodes, self.superlink = [], None
        for group in groups:
            for process in group:
                _signal_group(process, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for process in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                _signal_group(process, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while stragglers := marked_processes(self.marker):  # detached SuperExec, apps
            for pid in stragglers:  # a SIGKILLed process lingers until it is scheduled
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for log in self._logs:
            log.close()
        self._logs = []
        atexit.unregister(self.stop)

    def kill_node(self, index: int) -> bool:
        """SIGKILL SuperNode ``index`` and its children (a node that vanishes).

        Returns
        -------
        bool
            False when the deployment is already stopped (nothing left to kill), so a
            watcher thread that fires late cannot fail on a stopped deployment.
        """
        with self._lock:
            if not 0 <= index < len(self.supernodes):
                if self.superlink is None:
                    return False
                raise IndexError(f"no SuperNode {index} (there are {len(self.supernodes)})")
            _signal_group(self.supernodes[index], signal.SIGKILL)
            return True

    # ------------------------------------------------------------------ flwr CLI
    def _flwr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_tool("flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=timeout,
        )

    def online_nodes(self) -> int:
        """How many SuperNodes the SuperLink lists as online."""
        listed = self._flwr("supernode", "ls", FEDERATION, "--format", "json")
        try:
            nodes = json.loads(listed.stdout)["nodes"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return 0
        return sum(node.get("status") == "online" for node in nodes)

    def wait_for_nodes(self, count: int) -> None:
        """Block until ``count`` SuperNodes are online, or raise :class:`DeploymentError`."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.superlink is not None and self.superlink.poll() is not None:
                raise DeploymentError(f"the SuperLink exited; see {self.logs}/superlink.log")
            if self.online_nodes() >= count:
                return
            time.sleep(0.5)
        raise DeploymentError(f"{count} SuperNodes were not online after {self.start_timeout} s")

    def run(self, app_dir: Path, run_config: str, timeout: float = 600) -> RunOutcome:
        """``flwr run APP local-deployment --stream --run-config ...``, then its final status."""
        started = time.monotonic()
        try:
            done = self._flwr(
                "run",
                str(app_dir),
                FEDERATION,
                "--stream",
                "--run-config",
                run_config,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as err:
            raise DeploymentError(f"flwr run did not finish within {timeout} s") from err
        log = done.stdout + done.stderr
        (self.logs / "run.log").write_text(log)
        run_id, status, details = self._last_run()
        return RunOutcome(run_id, status, details, time.monotonic() - started, log)

    def _last_run(self) -> tuple[int | None, str, str]:
        listed = self._flwr("ls", FEDERATION, "--format", "json")
        try:
            runs: list[dict[str, Any]] = json.loads(listed.stdout)["runs"]
        except (json.JSONDecodeError, KeyError, TypeError):
            return None, "unknown", listed.stdout + listed.stderr
        if not runs:
            return None, "unknown", "no run listed"
        last = max(runs, key=lambda run: int(run.get("run-id", 0)))
        return int(last["run-id"]), str(last.get("status")), str(last.get("status-details", ""))


def _tool(name: str) -> str:
    """A console script of this Python environment (the venv's ``bin``), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def marked_processes(marker: str) -> list[int]:
    """Ids of the processes whose environment has ``MARKER=marker`` (empty without ``/proc``)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
