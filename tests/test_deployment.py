"""Real Flower processes: a SuperLink and three SuperNodes on localhost, ``flwr run``.

Node 0 holds every 3 of sklearn's digits; its user files a deletion request for class 3 on
the node, which the federation takes in round 4 (``deletion.round``), once the 3s are learned.
The first test checks the request is picked up, unlearned once and recorded; the second kills
a SuperNode during the recovery relay and checks that the run completes and says what
happened. Every process is stopped by the deployment's context manager, even when a test
fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
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
from fedforget.simulations.deployment import LocalDeployment, stage_app
from fedforget.training import accuracy

pytestmark = pytest.mark.slow
FORGET_CLASS = 3


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


def _run_config(out: Path, rounds: int = 4, verify: str = "spd", min_accuracy: float = 0.0) -> str:
    """Rounds of 10 local epochs at lr 0.02 (non-IID digits learn 3s by round 3 this way)."""
    config = validate_config(
        {
            "clients": 3,
            "data": {"dataset": "digits"},
            "train": {"rounds": rounds, "local_epochs": 10, "batch_size": 16, "lr": 0.02},
            "deletion": {"mode": "requests", "round": rounds},
            "recovery": {"min_accuracy": min_accuracy, "max_hops": 1},
            "reference": "none",
            "verify": {"method": verify},
            "methods": {
                "options": {"spd": {"epochs": 1, "max_samples": 64}} if verify == "spd" else {}
            },
            "message_timeout": 30.0,
            "out": str(out),
        }
    )
    return run_config_argument(config)


def _after(condition, action) -> threading.Thread:
    """Run ``action`` once ``condition()`` holds (polled), in the background."""

    def wait_then_act() -> None:
        deadline = time.monotonic() + 300
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.3)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def _file_request(node_dir: Path) -> subprocess.CompletedProcess:
    """The node's user files the deletion, as they would by hand."""
    command = [sys.executable, "-m", "fedforget.cli", "request-deletion"]
    args = ["--node-dir", str(node_dir), "--class", str(FORGET_CLASS)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


def _final_accuracy(out: Path, data: ArrayDataset) -> float:
    model = build_model("lenet5", 10, 1, 8)
    model.load_state_dict(torch.load(out / MODEL_FILE, weights_only=True))
    return accuracy(model, data)


def test_a_request_filed_on_a_node_is_unlearned_once_and_recorded(tmp_path: Path) -> None:
    dirs = _node_dirs(tmp_path)
    out = tmp_path / "run"
    broken = dirs[1] / REQUESTS_DIR / "typo.json"
    broken.parent.mkdir()
    broken.write_text('{"samples": [1, 2], "clases": [3]}')
    filed: list[subprocess.CompletedProcess] = []
    with LocalDeployment(tmp_path, dirs) as deployment:
        filed.append(_file_request(dirs[0]))  # reported from round 4 on (deletion.round)
        outcome = deployment.run(stage_app(tmp_path / "app"), _run_config(out), timeout=400)
    assert outcome.status == "finished:completed", outcome.details + outcome.log[-2000:]
    assert "filed deletion request" in filed[0].stdout

    summary = json.loads((out / SUMMARY_FILE).read_text())
    deletion = summary["deletion"]
    (request,) = deletion["requests"]  # unlearned exactly once
    ledger = json.loads((dirs[0] / LEDGER_FILE).read_text())["carried_out"]
    assert [entry["id"] for entry in ledger] == request["requests"]
    assert ledger[0]["round"] == request["round"] == 4
    assert request["client"] == 0 and request["classes"] == [FORGET_CLASS]
    assert deletion["mode"] == "requests" and deletion["forget_classes"] == [FORGET_CLASS]
    assert not list((dirs[0] / REQUESTS_DIR).glob("*.json"))
    # the malformed request was refused on its node, with the reason, and nothing stopped
    assert "unknown key(s) ['clases']" in (broken.parent / "rejected" / "typo.error").read_text()

    # the node's own verification: the deleted 3s were known before and are forgotten now
    (report,) = summary["verification"]
    assert report["client"] == 0 and report["method"] == "spd"
    assert report["source_clean_accuracy"] >= 0.4 and report["unlearned_clean_accuracy"] <= 0.1
    test = load_dataset("digits").test
    threes = test.subset(np.flatnonzero(test.y == FORGET_CLASS))
    rest = test.subset(np.flatnonzero(test.y != FORGET_CLASS))
    assert _final_accuracy(out, threes) <= 0.05
    assert _final_accuracy(out, rest) >= 0.6


def test_the_run_survives_a_node_killed_during_the_relay(tmp_path: Path) -> None:
    dirs = _node_dirs(tmp_path)
    out = tmp_path / "run"
    with LocalDeployment(tmp_path, dirs) as deployment:
        _file_request(dirs[0])
        # the ledger is written when the deletion is carried out: the relay starts right after
        _after(lambda: (dirs[0] / LEDGER_FILE).exists(), lambda: deployment.kill_node(2))
        # the relay always takes its hop; no verification, and 2 rounds are enough here
        config = _run_config(out, rounds=2, verify="none", min_accuracy=1.0)
        outcome = deployment.run(stage_app(tmp_path / "app"), config, timeout=400)
    assert outcome.status == "finished:completed", outcome.details + outcome.log[-2000:]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    faults = summary["deletion"]["faults"]
    assert faults and {fault["client"] for fault in faults} == {2}, faults
    assert summary["deletion"]["relay_hops"] == 1
    assert summary["phases"]["final"]["test_accuracy"] > 0.3
    assert (out / MODEL_FILE).is_file()
