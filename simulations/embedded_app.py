"""Example: fedforget's unlearning strategy inside your own Flower App (public API only).

Your model, your ``@app.main()``, your evaluate function; the nodes run fedforget's ClientApp
(``fedforget.clients.app:app``), which answers the deletion, data-for-unlearning, relay and
verification messages. On a deployment give each SuperNode ``node-dir`` (its ``data.npz``
and its users' deletion requests, see docs/deployment.md); in a simulation the nodes take their
slice of the configured dataset.

Run it in a simulation::

    python -m fedforget.simulations.embedded_app

or point a Flower App's ``serverapp`` component at ``fedforget.simulations.embedded_app:app``
and its ``clientapp`` at ``fedforget.clients.app:app``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from torch import Tensor, nn

from fedforget.clients.app import app as clientapp
from fedforget.config import DeletionConfig, SimulationConfig, TrainConfig
from fedforget.data import load_dataset
from fedforget.models import ClassifierModel, register_model
from fedforget.strategies import FederatedUnlearning, StrategySettings
from fedforget.training import accuracy
from fedforget.unlearning import build_unlearner

__all__ = ["TinyMlp", "app", "clientapp", "make_strategy"]

MODEL = "example-mlp"
PLUGIN = "fedforget.simulations.embedded_app"


@register_model(MODEL)
class TinyMlp(ClassifierModel):
    """Your own model: any :class:`ClassifierModel` (an encoder and a linear ``head``)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size**2, 64), nn.ReLU()
        )
        self.head = nn.Linear(64, num_classes)

    def _encode(self, x: Tensor, features: dict[str, Tensor] | None) -> Tensor:
        return self.encoder(x)


def example_config(rounds: int = 3) -> SimulationConfig:
    """What the nodes need to know: model name, local training, the deletion to expect."""
    return SimulationConfig(
        clients=3,
        model=MODEL,
        data={"dataset": "digits"},
        train=TrainConfig(rounds=rounds, local_epochs=3, lr=0.05, batch_size=32),
        deletion=DeletionConfig(mode="class", forget_classes=[3], round=rounds - 1),
        reference="none",
        plugins=[PLUGIN],  # every node imports this module, so it knows the model
    )


def make_strategy(config: SimulationConfig, num_classes: int) -> FederatedUnlearning:
    """The strategy for ``config``'s federation with paper 000's distillation unlearner.

    The settings (deletion mode and classes, FedAvg sampling, seed, relay, timeout) come from
    ``config``, the same object the nodes receive in every message, so both sides agree.
    """
    return FederatedUnlearning(
        StrategySettings.from_config(config, num_classes=num_classes),
        unlearner=build_unlearner("distill", mu_attention=0.0),  # the MLP has no feature maps
        build_model=lambda: TinyMlp(num_classes, 1, 8),
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Your ServerApp: FedAvg rounds; deletion requests are handled as they arrive."""
    config = example_config(int(context.run_config.get("num-server-rounds", 3)))
    test = load_dataset("digits").test

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = TinyMlp(10, 1, 8)
        model.load_state_dict(arrays.to_torch_state_dict())
        threes = test.subset(np.flatnonzero(test.y == 3))
        return MetricRecord(
            {"accuracy": accuracy(model, test), "accuracy-3": accuracy(model, threes)}
        )

    strategy = make_strategy(config, num_classes=10)
    result = strategy.start(
        grid,
        ArrayRecord(TinyMlp(10, 1, 8).state_dict()),
        num_rounds=config.train.rounds,
        evaluate_fn=evaluate,
    )
    for server_round, metrics in result.evaluate_metrics_serverapp.items():
        print(f"round {server_round}: {dict(metrics)}")


if __name__ == "__main__":
    from flwr.simulation import run_simulation

    run_simulation(server_app=app, client_app=clientapp, num_supernodes=3)
