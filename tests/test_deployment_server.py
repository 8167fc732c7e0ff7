"""The ServerApp of a deployment (``flwr run``), in this process on a fake Grid of real nodes.

``fedforget.server.app.main`` is what a SuperLink runs: it must tell every round's number and
test accuracy and the deletion step in Flower's log (what ``flwr run --stream`` shows), write
``run.json`` beside the results like ``fedforget simulate``, and plot the deleting nodes' own
D_f accuracy in ``metrics.png`` (the server of a deployment holds no D_f).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from flwr.app import Context, RecordDict
from test_node_confirmation import RealNode, _node_dirs
from test_strategy_parts import FakeGrid, _server_identity  # noqa: F401 - autouse fixture

from fedforget import protocol as P
from fedforget.config import ConfigError, SimulationConfig
from fedforget.node import file_request
from fedforget.report import plot
from fedforget.report.summary import DeletionSummary, Summary
from fedforget.server import app as server_app


def _deployment_context(out: Path, run_id: int = 7) -> Context:
    config = SimulationConfig(
        clients=2,
        strategy="retrain",
        data={"dataset": "digits"},
        train={"rounds": 2, "local_epochs": 1},
        deletion={"mode": "requests"},
        reference="none",
        verify={"method": "none"},
        message_timeout=5.0,
        out=str(out),
    )
    run_config = {P.RUN_CONFIG_KEY: config.to_json()}
    return Context(
        run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )


def test_the_server_tells_rounds_accuracy_and_the_deletion_and_writes_run_json(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dirs = _node_dirs(tmp_path, 2)
    request, _, _ = file_request(dirs[0], samples=[4, 9])
    grid = FakeGrid({100 + i: RealNode(folder, i) for i, folder in enumerate(dirs)})
    out = tmp_path / "run"

    with caplog.at_level(logging.INFO, logger="flwr"):
        server_app.main(grid, _deployment_context(out))

    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "flwr")
    for server_round in (1, 2):
        pattern = rf"round {server_round}/2: test accuracy \d+\.\d%; 2 clients trained, 0 failed"
        assert re.search(pattern, text), text
    assert "deletion: requests after round 1 from clients [0] (2 samples)" in text
    assert f"client 0 (node 100) confirmed requests ['{request.id}']" in text
    assert re.search(r"after unlearning: test accuracy \d", text)
    assert re.search(r"retrain round 1/1: test accuracy \d", text)  # retrain's own rounds

    run = json.loads((out / server_app.RUN_FILE).read_text())
    assert (run["status"], run["flwr_run_id"], run["command"]) == ("complete", 7, None)
    summary = json.loads((out / "summary.json").read_text())
    (entry,) = summary["deletion"]["requests"]
    assert (entry["requests"], entry["status"]) == ([request.id], "confirmed")
    assert set(summary["deletion"]["node_forget_accuracy"]) >= {"before_deletion", "final"}
    assert (out / "metrics.png").stat().st_size > 0

    # a second run into the same folder is refused and leaves the first one's record alone
    with pytest.raises(ConfigError, match="holds an earlier run"):
        server_app.main(grid, _deployment_context(out, run_id=8))
    assert json.loads((out / server_app.RUN_FILE).read_text()) == run


def test_a_failed_deployment_run_is_marked_failed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):  # no node answers: every client of round 1 failed
        broken = FakeGrid({node: lambda message: "OSError: disk" for node in (100, 101)})
        server_app.main(broken, _deployment_context(out))
    assert json.loads((out / server_app.RUN_FILE).read_text())["status"] == "failed"


def test_metrics_png_plots_the_deleting_nodes_own_d_f_accuracy(tmp_path, monkeypatch) -> None:
    drawn: list = []
    monkeypatch.setattr(plot.plt, "close", lambda fig: drawn.append(fig))
    rows = [{"phase": "federated", "round": r, "test_accuracy": 0.5 + 0.1 * r} for r in (1, 2, 3)]
    deletion = DeletionSummary(
        mode="requests",
        round=2,
        node_forget_accuracy={
            "before_deletion": 0.9,
            "after_unlearning": 0.1,
            "after_recovery": 0.2,
            "final": 0.05,
        },
    )
    summary = Summary(fedforget_version="x", strategy="distill", deletion=deletion, config={})
    plot.plot_run(rows, summary, tmp_path / "metrics.png")
    (figure,) = drawn
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    node_line = lines[plot.NODE_FORGET_LABEL]
    assert list(node_line.get_xdata()) == pytest.approx([2.0, 2.33, 2.66, 3.0])
    assert list(node_line.get_ydata()) == [0.9, 0.1, 0.2, 0.05]
    plt.close(figure)
