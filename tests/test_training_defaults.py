"""Training defaults derived from the clients' data: MNIST's where they suit, small data's else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedforget import protocol as P
from fedforget.config import TrainConfig, validate_config
from fedforget.data import resolve_training
from fedforget.simulations.runner import simulate
from fedforget.strategies.settings import StrategySettings


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, (0.02, 23, 20)),  # shards' own defaults
        ({"train": {"lr": 0.05}}, (0.05, 23, 20)),  # a set value is kept
        ({"train": {"rounds": 10}}, (0.02, 10, 7)),  # fewer rounds: the general deletion round
        ({"deletion": {"round": 3}}, (0.02, 23, 3)),
    ],
)
def test_the_shards_partition_trains_with_its_own_defaults_where_none_is_set(
    given: dict, expected: tuple
) -> None:
    config = validate_config({**given, "data": {"partition": "shards"}})
    assert (config.train.lr, config.train.rounds, config.deletion.round) == expected
    again = validate_config(json.loads(config.to_json()))  # as summary.json reads back
    assert (again.train.lr, again.train.rounds, again.deletion.round) == expected
    other = validate_config({**given, "data": {"partition": "iid"}})
    assert other.train.lr == given.get("train", {}).get("lr", 0.05)
    assert other.train.rounds == given.get("train", {}).get("rounds", 10)


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ([3000] * 20, (50, 2)),  # MNIST, 20 clients: the measured defaults
        ([600] * 100, (50, 2)),  # MNIST, 100 clients: 24 steps a round
        ([280] * 5, (17, 6)),  # digits, 5 clients: 12 steps a round at batch 50
        ([57] * 1000, (16, 10)),  # MNIST, 1,000 clients: the epochs' cap
        ([200, 280, 3000], (17, 6)),  # the median client decides
    ],
)
def test_unset_batch_and_epochs_come_from_the_median_client(sizes, expected) -> None:
    train = TrainConfig().resolved(sizes)
    assert (train.batch_size, train.local_epochs) == expected


def test_set_values_are_kept_and_the_rest_fits_them() -> None:
    assert TrainConfig(batch_size=8, local_epochs=3).resolved([280]).local_epochs == 3
    assert TrainConfig(batch_size=32).resolved([280]).local_epochs == 10  # 9 steps an epoch
    assert TrainConfig(local_epochs=1).resolved([280]).batch_size == 17


def test_a_strategy_sends_the_clients_the_derived_settings() -> None:
    config = validate_config({"clients": 4, "data": {"dataset": "digits"}})
    assert not config.train.is_resolved
    settings = StrategySettings.from_config(config, num_classes=10)
    assert settings.config.train == resolve_training(config).train
    sent = validate_config(json.loads(settings.message_config()[P.RUN_CONFIG_KEY]))
    assert sent.train == settings.config.train and sent.train.is_resolved
    assert sent.train.local_epochs > 2  # digits' clients are small: more epochs than MNIST's


def test_a_digits_sized_file_learns_with_the_defaults(tmp_path) -> None:
    """Issue 36, item 1: at batch 50 and 2 epochs this file stayed at 11 % for 10 rounds."""
    digits = load_digits()
    x, y = (digits.images / 16).astype(np.float32), digits.target
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    path = tmp_path / "my_digits.npz"
    np.savez(path, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    config = validate_config(
        {
            "clients": 5,
            "data": {"dataset": "npz", "path": str(path)},
            "reference": "none",
            "out": str(tmp_path / "run"),
        }
    )
    summary = simulate(config)
    assert (summary.config["train"]["batch_size"], summary.config["train"]["local_epochs"]) == (
        17,
        6,
    )
    assert summary.phases.before_deletion.test_accuracy > 0.9
    assert summary.phases.final.test_accuracy > 0.9
