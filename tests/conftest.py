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


def leaving_client_federation(kind: str, seed: int = 0):
    """A client-mode federation on digits in which client 0, the leaving client, holds ...

    ``threes`` (3 clients): every training 3 and an equal share of the other classes, so a
    model without it cannot know 3s (the plan's ``forget_classes`` = (3,) makes the Evaluator
    report the test 3s apart). FedAvg learns a class held by one client erratically: after 6
    rounds the test 3s scored 0.32-0.87 over seeds 0-2 with 4 clients, 0.76-0.97 with 3, and
    0.08-0.35 when client 0 held nothing but 3s.
    ``backdoor`` (4 clients): every triggered sample (relabelled to the target) plus its own
    clean share: the malicious client of Halimi et al. and Fast-FedUL, whose trigger clean
    training keeps.

    Returns ``(config, federation)``; the config's train settings are the conformance ones.
    """
    import numpy as np

    from fedforget.data import build_federation
    from fedforget.data.deletion import DeletionPlan, Federation

    if kind == "threes":
        clients = 3
        config = digits_config(
            clients=clients,
            seed=seed,
            deletion={"mode": "class", "forget_classes": [3], "share": 0.1},
            train={"batch_size": 16},
        )
        base = build_federation(config)
        threes = np.flatnonzero(base.train.y == 3)
        others = np.flatnonzero(base.train.y != 3)
        split = np.array_split(np.random.default_rng(seed).permutation(others), clients)
        indices = [np.union1d(threes, split[0])] + [np.sort(part) for part in split[1:]]
        plan = DeletionPlan("client", {0: indices[0]}, forget_classes=(3,))
        trigger = 0
    elif kind == "backdoor":
        config = digits_config(
            clients=4,
            seed=seed,
            deletion={"mode": "backdoor", "share": 0.1},
            train={"batch_size": 16},
        )
        base = build_federation(config)
        poisoned = base.plan.forget_indices
        client0 = np.union1d(poisoned, base.client_indices[0])
        indices = [client0] + [np.setdiff1d(ci, poisoned) for ci in base.client_indices[1:]]
        plan = DeletionPlan("client", {0: client0}, backdoor_target=base.plan.backdoor_target)
        trigger = base.trigger_size
    else:
        raise ValueError(f"unknown leaving-client federation {kind!r}")
    federation = Federation(
        base.name, base.train, base.test, base.num_classes, indices, plan, trigger
    )
    return config, federation


@pytest.fixture(scope="session")
def make_leaving_client_federation():
    """Factory fixture: :func:`leaving_client_federation`."""
    return leaving_client_federation
