"""The embedding example (public API only) runs on Flower's simulation engine and forgets."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedforget.data import load_dataset
from fedforget.simulations import embedded_app as example
from fedforget.simulations.runner import WORKER_NICENESS_ENV
from fedforget.training import accuracy

pytestmark = pytest.mark.slow


def test_the_example_strategy_forgets_class_3_in_someone_elses_server_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Flower's own engine, not fedforget's runner: its Ray workers would start at nice 15 and
    # yield their cores to any other job on a shared runner (docs/architecture.md)
    monkeypatch.setenv(WORKER_NICENESS_ENV, "0")
    config = example.example_config(rounds=3)
    test = load_dataset("digits").test
    threes = test.subset(np.flatnonzero(test.y == 3))
    seen: dict[int, tuple[float, float]] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = example.TinyMlp(10, 1, 8)
        model.load_state_dict(arrays.to_torch_state_dict())
        seen[server_round] = (accuracy(model, test), accuracy(model, threes))
        return MetricRecord({"accuracy": seen[server_round][0]})

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = example.make_strategy(config, num_classes=10)
        initial = ArrayRecord(example.TinyMlp(10, 1, 8).state_dict())
        strategy.start(grid, initial, num_rounds=config.train.rounds, evaluate_fn=evaluate)
        assert strategy.deletion.round == config.deletion.round

    run_simulation(server_app=app, client_app=example.clientapp, num_supernodes=3)
    assert seen[2][1] > 0.5  # the 3s were learned before the deletion (after round 2)
    assert seen[3][1] <= 0.05  # and forgotten after it, while the rest is kept
    assert seen[3][0] >= 0.7
