"""The deployment benchmark's baseline: a plain Flower App that trains what fedforget trains.

Its ratio means something only if the baseline runs none of fedforget's code (each of its
ClientApp processes would otherwise pay part of fedforget's import) and trains the same network
the same way; these tests hold it to both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from fedforget.data import load_dataset
from fedforget.models import build_model
from fedforget.simulations import plain_flower
from fedforget.simulations.deployment_benchmark import node_shares, parse_args, stage_plain_app
from fedforget.training import train_local


def test_the_plain_app_imports_only_flower_pytorch_and_numpy() -> None:
    tree = ast.parse(Path(plain_flower.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "json", "time", "pathlib", "numpy", "torch", "flwr"}
    assert "flwr" in imported and "fedforget" not in imported


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_the_plain_network_has_fedforgets_lenet5_layers(channels: int, size: int) -> None:
    ours = build_model("lenet5", 10, channels, size).state_dict()
    plain = plain_flower.LeNet5(10, channels, size).state_dict()
    assert {k: v.shape for k, v in plain.items()} == {k: v.shape for k, v in ours.items()}
    # with fedforget's weights it computes fedforget's function
    net = plain_flower.LeNet5(10, channels, size)
    net.load_state_dict(ours)
    model = build_model("lenet5", 10, channels, size)
    model.load_state_dict(ours)
    x = torch.randn(4, channels, size, size)
    assert torch.allclose(net(x), model(x), atol=1e-6)


def test_the_plain_client_trains_as_fedforgets_client_does() -> None:
    """Same weights, seed and settings: the same weights after local training."""
    torch.set_num_threads(1)
    share = node_shares(load_dataset("digits").train, 3, seed=0)[0]
    start = build_model("lenet5", 10, 1, 8).state_dict()
    ours = build_model("lenet5", 10, 1, 8)
    ours.load_state_dict(start)
    train_local(ours, share, epochs=3, lr=0.02, momentum=0.9, batch_size=16, seed=7)
    net = plain_flower.network_for(share.x, 10)
    net.load_state_dict(start)
    x, y = torch.from_numpy(share.x), torch.from_numpy(share.y).long()
    config = {"lr": 0.02, "momentum": 0.9, "batch-size": 16, "local-epochs": 3}
    loss, seconds = plain_flower.train_network(net, x, y, config, seed=7)
    trained = ours.state_dict()
    assert all(torch.allclose(v, trained[k], atol=1e-5) for k, v in net.state_dict().items())
    assert not torch.allclose(trained["head.weight"], start["head.weight"])  # it did train
    assert loss > 0 and seconds > 0


def test_the_shares_split_every_sample_once() -> None:
    train = load_dataset("digits").train
    shares = node_shares(train, 3, seed=1)
    assert sum(len(s) for s in shares) == len(train)
    assert len({len(s) for s in shares}) <= 2  # as even as the count allows
    rows = np.concatenate([s.x.reshape(len(s), -1) for s in shares])
    assert len(np.unique(rows, axis=0)) == len(np.unique(train.x.reshape(len(train), -1), axis=0))


def test_the_staged_plain_app_declares_every_run_config_key(tmp_path: Path) -> None:
    import tomllib

    app = stage_plain_app(tmp_path / "app")
    declared = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert declared["components"]["clientapp"].endswith(":client")
    used = {
        "num-rounds", "local-epochs", "batch-size", "lr", "momentum", "seed", "num-classes",
        "test-file", "out-file",
    }  # fmt: skip
    assert used <= set(declared["config"])
    source = (app / "plain_flower_app.py").read_text()
    assert all(f'config["{key}"]' in source for key in used)


def test_the_benchmark_refuses_a_deletion_round_it_cannot_reach() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "3", "--deletion-round", "3"])
    assert parse_args([]).deletion_round < parse_args([]).rounds


def test_the_benchmark_never_clears_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from fedforget.simulations.deployment_benchmark import main

    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(SystemExit, match="holds other files"):
        main(["--out", str(tmp_path)])
    assert keep.read_text() == "mine"
