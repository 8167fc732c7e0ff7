"""Real Flower processes: a SuperLink and three SuperNodes on localhost, ``flwr run``.

Node 0 holds every 3 of sklearn's digits; its user files a deletion request for class 3 on
the node, which the federation takes in round 4 (``deletion.round``), once the 3s are learned.
The first test checks the request is picked up, unlearned once and recorded; the second kills
a SuperNode during the recovery relay and checks that the run completes and says what
happened. Every process is stopped by the deployment's context manager, even when a test
fails.

Timeouts are multiples of ``client_round_seconds`` (conftest), the measured time of one
client's round on this machine, so a slow or busy machine waits longer instead of failing.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from fedforget.cli import run_config_argument
from fedforget.config import validate_config
from fedforget.data import ArrayDataset, load_dataset
from fedforget.models import build_model
from fedforget.node import LEDGER_FILE, REQUESTS_DIR, write_node_data
from fedforget.report.recorder import MODEL_FILE, SUMMARY_FILE
from fedforget.simulations.deployment import LocalDeployment, marked_processes, stage_app
from fedforget.training import accuracy

pytestmark = pytest.mark.slow
FORGET_CLASS = 3


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait, scaled from the measured speed of this machine.

    A round sends one message to each of 3 SuperNodes that share the cores with the SuperLink
    and the ServerApp: 10 measured client rounds per message leave room for them and for
    load that grows after the measurement; the floors are what an idle machine needs.
    """

    message: float
    start: float
    command: float
    run: float

    @classmethod
    def measured(cls, client_round_seconds: float) -> Timeouts:
        unit = client_round_seconds
        return cls(
            message=max(30.0, 10 * unit),
            start=max(90.0, 15 * unit),
            command=max(60.0, 10 * unit),
            run=max(600.0, 100 * unit),
        )


@pytest.fixture
def timeouts(client_round_seconds: float) -> Timeouts:
    return Timeouts.measured(client_round_seconds)


def _node_dirs(root: Path) -> list[Path]:
    """Three nodes on digits; node 0 holds every sample of class 3."""
    train = load_dataset("digits").train
    others = np.random.default_rng(0).permutation(np.flatnonzero(train.y != FORGET_CLASS))
    parts = np.array_split(others, 3)
    parts[0] = np.concatenate([parts[0], np.flatnonzero(train.y == FORGET_CLASS)])
    dirs = [root / f"node{i}" for i in range(3)]
    for folder, part in zip(dirs, parts, strict=True):
        write_node_data(folder, train.subset(np.sort(part)))
    return dirs


def _run_config(
    out: Path,
    message_timeout: float,
    rounds: int = 4,
    verify: str = "spd",
    min_accuracy: float = 0.0,
) -> str:
    """Rounds of 10 local epochs at lr 0.02 (non-IID digits learn 3s by round 3 this way)."""
    config = validate_config(
        {
            "clients": 3,
            "data": {"dataset": "digits"},
            "train": {"rounds": rounds, "local_epochs": 10, "batch_size": 16, "lr": 0.02},
            "deletion": {"mode": "requests", "round": rounds},
            "recovery": {
                "min_accuracy": min_accuracy,
                "max_hops": 1,
                "restore": False,
                "budget_rounds": None,
            },
            "reference": "none",
            "verify": {"method": verify},
            "methods": {
                "options": {"spd": {"epochs": 1, "max_samples": 64}} if verify == "spd" else {}
            },
            "message_timeout": message_timeout,
            "out": str(out),
        }
    )
    return run_config_argument(config)


@contextlib.contextmanager
def _once(condition: Callable[[], bool], action: Callable[[], object]) -> Iterator[list]:
    """Run ``action`` in the background as soon as ``condition()`` holds (polled).

    Yields a list that holds ``action``'s result once it ran. Leaving the block stops the
    watcher and waits for it, so the action never runs after the block (on a deployment that
    is being stopped), and it never runs when ``condition`` did not hold.
    """
    done: list = []
    leaving = threading.Event()

    def watch() -> None:
        while not leaving.is_set():
            if condition():
                done.append(action())
                return
            leaving.wait(0.3)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        leaving.set()
        thread.join()


def _file_request(node_dir: Path, timeout: float) -> subprocess.CompletedProcess:
    """The node's user files the deletion, as they would by hand."""
    command = [sys.executable, "-m", "fedforget.cli", "request-deletion"]
    args = ["--node-dir", str(node_dir), "--class", str(FORGET_CLASS)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout)


def _final_accuracy(out: Path, data: ArrayDataset) -> float:
    model = build_model("lenet5", 10, 1, 8)
    model.load_state_dict(torch.load(out / MODEL_FILE, weights_only=True))
    return accuracy(model, data)


def test_a_request_filed_on_a_node_is_unlearned_once_and_recorded(
    tmp_path: Path, timeouts: Timeouts
) -> None:
    dirs = _node_dirs(tmp_path)
    out = tmp_path / "run"
    broken = dirs[1] / REQUESTS_DIR / "typo.json"
    broken.parent.mkdir()
    broken.write_text('{"samples": [1, 2], "clases": [3]}')
    filed: list[subprocess.CompletedProcess] = []
    with LocalDeployment(tmp_path, dirs, start_timeout=timeouts.start) as deployment:
        filed.append(_file_request(dirs[0], timeouts.command))  # reported from round 4 on
        config = _run_config(out, timeouts.message)
        outcome = deployment.run(stage_app(tmp_path / "app"), config, timeout=timeouts.run)
    assert not marked_processes(deployment.marker)  # every process it started is gone
    assert outcome.status == "finished:completed", outcome.details + outcome.log[-2000:]
    assert "filed deletion request" in filed[0].stdout

    summary = json.loads((out / SUMMARY_FILE).read_text())
    deletion = summary["deletion"]
    (request,) = deletion["requests"]  # unlearned exactly once
    ledger = json.loads((dirs[0] / LEDGER_FILE).read_text())["carried_out"]
    assert [entry["id"] for entry in ledger] == request["requests"]
    assert ledger[0]["round"] == request["round"] == 4
    assert request["client"] == 0 and request["classes"] == [FORGET_CLASS]
    assert request["status"] == "confirmed"  # the node's acknowledgement came back
    assert deletion["mode"] == "requests" and deletion["forget_classes"] == [FORGET_CLASS]
    assert not list((dirs[0] / REQUESTS_DIR).glob("*.json"))
    # the malformed request was refused on its node, with the reason, and nothing stopped
    assert "unknown key(s) ['clases']" in (broken.parent / "rejected" / "typo.error").read_text()

    # the deleting node measured its own D_f (only the numbers reached the server)
    node_accuracy = deletion["node_forget_accuracy"]
    assert set(node_accuracy) == {"before_deletion", "after_unlearning", "after_recovery", "final"}
    assert node_accuracy["before_deletion"] >= 0.4 and node_accuracy["final"] <= 0.1
    assert deletion["node_forget_samples"] == len(ledger[0]["samples"])
    told_in_stream = (
        "round 4/4: test accuracy",
        "deletion: requests after round 4",
        "deletion: unlearning",
        "confirmed requests",
        "after recovery: test accuracy",
        "own D_f accuracy",
    )
    for told in told_in_stream:
        assert told in outcome.log, told  # flwr run --stream shows rounds and the deletion
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    # the node's own verification: the deleted 3s were known before and are forgotten now
    (report,) = summary["verification"]
    assert report["client"] == 0 and report["method"] == "spd"
    assert report["source_clean_accuracy"] >= 0.4 and report["unlearned_clean_accuracy"] <= 0.1
    test = load_dataset("digits").test
    threes = test.subset(np.flatnonzero(test.y == FORGET_CLASS))
    rest = test.subset(np.flatnonzero(test.y != FORGET_CLASS))
    assert _final_accuracy(out, threes) <= 0.05
    assert _final_accuracy(out, rest) >= 0.6


def test_the_run_survives_a_node_killed_during_the_relay(
    tmp_path: Path, timeouts: Timeouts
) -> None:
    dirs = _node_dirs(tmp_path)
    out = tmp_path / "run"
    # the relay always takes its hop; no verification, and 2 rounds are enough here
    config = _run_config(out, timeouts.message, rounds=2, verify="none", min_accuracy=1.0)
    ledger = dirs[0] / LEDGER_FILE
    with LocalDeployment(tmp_path, dirs, start_timeout=timeouts.start) as deployment:
        _file_request(dirs[0], timeouts.command)
        # the ledger is written when the deletion is carried out: the relay starts right after
        with _once(ledger.exists, lambda: deployment.kill_node(2)) as killed:
            outcome = deployment.run(stage_app(tmp_path / "app"), config, timeout=timeouts.run)
    assert not marked_processes(deployment.marker)
    assert outcome.status == "finished:completed", outcome.details + outcome.log[-2000:]
    assert killed == [True], "the deletion was never carried out, so no node was killed"
    summary = json.loads((out / SUMMARY_FILE).read_text())
    faults = summary["deletion"]["faults"]
    assert faults and {fault["client"] for fault in faults} == {2}, faults
    assert summary["deletion"]["relay_hops"] == 1
    assert summary["phases"]["final"]["test_accuracy"] > 0.3
    assert (out / MODEL_FILE).is_file()


def test_the_deployment_benchmark_runs_plain_flower_and_fedforget_on_one_superlink(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from fedforget.simulations import benchmark

    out = tmp_path / "bench"
    args = ["--deployment", "--nodes", "2", "--rounds", "3", "--deletion-round", "2"]
    result = benchmark.main([*args, "--local-epochs", "5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "round / plain Flower round" in printed and "round trips" in printed
    assert json.loads((out / "deployment.json").read_text()) == result
    plain, ours = result["plain"], result["fedforget"]
    assert len(plain["accuracy"]) == len(plain["round_seconds"]) == 3
    assert len(ours["round_seconds"]) == 3
    assert plain["accuracy"][-1] > 0.5 and ours["accuracy"][-1] > 0.5  # both trained
    # the drop order rode on the next round's message: only relay hops could cost one
    assert ours["deletion_round_trips"] <= 2 * ours["relay_hops"]
    assert result["ratios"]["round_over_plain"] > 0 and ours["deletion_gap_seconds"] is not None
    # node 0's request was carried out on its node: 6 % of its 719 samples
    (entry,) = json.loads((out / "node0" / LEDGER_FILE).read_text())["carried_out"]
    assert len(entry["samples"]) == round(0.06 * 719) and entry["round"] == 2
