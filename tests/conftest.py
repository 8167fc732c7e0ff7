"""Shared fixtures: small configurations on sklearn's digits (ships with scikit-learn).

Every test runs torch on one thread, in this process and in the processes it starts
(``OMP_NUM_THREADS``, set before any of them imports torch): the thread count changes how
reductions are split, so results on a 2-core CI machine and on a 64-core workstation differ
in their last bits otherwise, and a few learned quantities amplify those bits.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # inherited by subprocesses: SuperNodes, Ray workers, the CLI

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from fedforget.config import SimulationConfig, validate_config  # noqa: E402

torch.set_num_threads(1)

# A fresh interpreter does what a deployment's ClientApp process does for one training
# message: import torch, Flower and fedforget, then train a LeNet-5 on a third of digits.
_CLIENT_ROUND = """
import numpy as np, flwr, torch
from fedforget.data import load_dataset
from fedforget.models import build_model
from fedforget.training import train_local
train = load_dataset("digits").train
part = train.subset(np.arange(0, len(train), 3))
train_local(build_model("lenet5", 10, 1, 8), part, epochs=10, lr=0.02, batch_size=16, seed=0)
"""


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


@pytest.fixture(scope="session")
def client_round_seconds() -> float:
    """Wall seconds one deployment client round takes on this machine, as loaded right now.

    Timeouts of tests that start processes are multiples of this, so they stretch on a slow
    or busy machine instead of failing there (the slower of two tries, the first one also
    warms the file cache).
    """
    times = []
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CLIENT_ROUND], check=True, timeout=600)
        times.append(time.perf_counter() - started)
    return max(times)
