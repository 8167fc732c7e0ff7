"""A plain Flower App: FedAvg of LeNet-5 on each node's ``data.npz``, nothing of fedforget.

The deployment benchmark (:mod:`fedforget.simulations.deployment_benchmark`) runs this app and
fedforget's on the same SuperLink, SuperNodes and data, so that the difference between the two
rounds is what fedforget adds. It is what a Flower user would write from Flower's quickstart:
``flwr.serverapp.strategy.FedAvg`` with a server-side ``evaluate_fn``, a ``@ClientApp.train``
that runs SGD on the node's data. The file imports only Flower, PyTorch and NumPy (a test checks
it): it is staged as a Flower App of its own, and importing fedforget in its ClientApp processes
would bill part of fedforget's cost to the baseline.

The network has the layers, names and shapes of fedforget's ``lenet5`` (a test compares the
two state dicts), and the client trains as fedforget's clients do: SGD with momentum,
cross-entropy, a fresh seeded permutation of the local data each epoch.

Run config keys: ``num-rounds``, ``local-epochs``, ``batch-size``, ``lr``, ``momentum``,
``seed``, ``num-classes``, ``test-file`` (an ``.npz`` with ``x`` and ``y`` the server scores the
model on after each round) and ``out-file`` (where the server writes, as JSON, the accuracy
after each round and the wall seconds of each round without the evaluation). Each SuperNode's
``node-config`` names its ``node-dir`` (holding ``data.npz``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import Tensor, nn

DATA_FILE = "data.npz"


class LeNet5(nn.Module):
    """LeNet-5 as fedforget builds it (padded ``conv2`` for images smaller than 12 pixels)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        pooled = image_size // 2
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, padding=0 if pooled >= 6 else 2)
        self.pool = nn.MaxPool2d(2)
        with torch.no_grad():
            flat = self._conv_stack(torch.zeros(1, in_channels, image_size, image_size)).numel()
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.head = nn.Linear(84, num_classes)

    def _conv_stack(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv1(x))
        return self.pool(torch.relu(self.conv2(self.pool(x))))

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self._conv_stack(x), 1)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def network_for(x: np.ndarray, num_classes: int) -> LeNet5:
    """The network for images shaped like ``x`` (``N x C x H x W``)."""
    return LeNet5(num_classes, in_channels=x.shape[1], image_size=x.shape[2])


def load_arrays(path: Path | str) -> tuple[Tensor, Tensor]:
    """Images and labels of an ``.npz`` file with ``x`` and ``y``."""
    with np.load(path) as data:
        return torch.from_numpy(data["x"].astype(np.float32)), torch.from_numpy(data["y"]).long()


def train_network(
    net: nn.Module, x: Tensor, y: Tensor, config: dict, seed: int
) -> tuple[float, float]:
    """Local SGD epochs on ``(x, y)``; returns the mean loss and the compute seconds."""
    optimizer = torch.optim.SGD(
        net.parameters(), lr=float(config["lr"]), momentum=float(config["momentum"])
    )
    generator = torch.Generator().manual_seed(seed)
    batch_size = int(config["batch-size"])
    started, total, steps = time.perf_counter(), 0.0, 0
    net.train()
    for _ in range(int(config["local-epochs"])):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
    return total / max(steps, 1), time.perf_counter() - started


client = ClientApp()


@client.train()
def train(message: Message, context: Context) -> Message:
    """Train the received model on this node's ``data.npz``."""
    x, y = load_arrays(Path(str(context.node_config["node-dir"])) / DATA_FILE)
    config = context.run_config
    net = network_for(x.numpy(), int(config["num-classes"]))
    net.load_state_dict(message.content["arrays"].to_torch_state_dict())
    server_round = int(message.content["config"]["server-round"])
    seed = int(config["seed"]) + 1000 * server_round + int(context.node_id % 1000)
    loss, seconds = train_network(net, x, y, config, seed)
    metrics = {"num-examples": len(y), "train_loss": loss, "compute_seconds": seconds}
    content = RecordDict(
        {"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content, reply_to=message)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg over every node for ``num-rounds`` rounds; writes accuracies and round seconds."""
    config = context.run_config
    x, y = load_arrays(str(config["test-file"]))
    torch.manual_seed(int(config["seed"]))
    net = network_for(x.numpy(), int(config["num-classes"]))
    nodes = len(list(grid.get_node_ids()))
    marks: list[tuple[float, float]] = []  # (evaluation start, evaluation end)
    accuracies: list[float] = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        started = time.perf_counter()
        net.load_state_dict(arrays.to_torch_state_dict())
        net.eval()
        with torch.no_grad():
            accuracies.append(float((net(x).argmax(1) == y).float().mean()))
        marks.append((started, time.perf_counter()))
        return MetricRecord({"accuracy": accuracies[-1]})

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
    )
    strategy.start(  # evaluates the initial model too: round 0
        grid,
        ArrayRecord(net.state_dict()),
        num_rounds=int(config["num-rounds"]),
        train_config=ConfigRecord({}),
        evaluate_fn=evaluate,
    )
    rounds = [marks[i][0] - marks[i - 1][1] for i in range(1, len(marks))]
    result = {"accuracy": accuracies[1:], "round_seconds": rounds, "nodes": nodes}
    Path(str(config["out-file"])).write_text(json.dumps(result))
