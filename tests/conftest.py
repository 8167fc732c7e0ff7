"""Shared fixtures: small configurations on sklearn's digits (ships with scikit-learn)."""

from __future__ import annotations

import pytest

from fedforget.config import SimulationConfig, validate_config


def digits_config(**overrides: object) -> SimulationConfig:
    """A federation of 4 clients on digits (8x8), LeNet-5, small trigger."""
    values: dict = {
        "clients": 4,
        "model": "lenet5",
        "data": {"dataset": "digits"},
        "train": {"rounds": 3, "local_epochs": 2, "lr": 0.05, "batch_size": 32},
        "deletion": {"round": 2, "trigger_size": 2, "share": 0.06},
        "recovery": {"min_accuracy": 0.5, "max_hops": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return validate_config(values)


@pytest.fixture(scope="session")
def make_config():
    """Factory fixture for digits configurations."""
    return digits_config
