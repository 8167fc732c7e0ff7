"""A run folder says whether its run finished; a stop request ends a wait for replies at once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from fedforget.config import ConfigError
from fedforget.simulations.runner import RUN_FILE, check_run_folder, run_folder
from fedforget.stopping import RunStoppedError, clear_stop, request_stop
from fedforget.strategies.messaging import exchange


def _status(folder: Path) -> str:
    return json.loads((folder / RUN_FILE).read_text())["status"]


def test_a_finished_run_is_marked_complete(tmp_path: Path) -> None:
    with run_folder(tmp_path / "run") as folder:
        assert _status(folder) == "running"
    assert _status(folder) == "complete"


@pytest.mark.parametrize(
    ("error", "status"),
    [(KeyboardInterrupt, "interrupted"), (RunStoppedError, "interrupted"), (ValueError, "failed")],
)
def test_a_run_that_did_not_finish_says_so(tmp_path: Path, error: type, status: str) -> None:
    folder = tmp_path / "run"
    with pytest.raises(error), run_folder(folder):
        raise error()
    assert _status(folder) == status
    with pytest.raises(ConfigError, match="holds an earlier run"):
        check_run_folder(folder)  # an unfinished run is an earlier run too


class _SilentGrid:
    """A grid whose nodes never answer."""

    def __init__(self) -> None:
        self.pulls = 0

    def push_messages(self, messages):
        return ["m-1"]

    def pull_messages(self, ids):
        self.pulls += 1
        return []


def test_a_stop_request_ends_the_wait_for_replies_at_once() -> None:
    clear_stop()
    grid = _SilentGrid()
    timer = threading.Timer(0.5, request_stop)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(RunStoppedError):
            exchange(grid, [], timeout=3600)
    finally:
        timer.cancel()
        clear_stop()
    assert time.monotonic() - started < 60  # not the 3600 s message timeout
    assert grid.pulls >= 1
