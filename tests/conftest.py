"""Shared fixtures: small configurations on sklearn's digits (ships with scikit-learn).

The configurations and federations themselves live in :mod:`fedforget.testing`, which the
experiments/ share.

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

from fedforget.testing import digits_config, leaving_client_federation  # noqa: E402

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


@pytest.fixture(scope="session")
def make_config():
    """Factory fixture: :func:`fedforget.testing.digits_config`."""
    return digits_config


@pytest.fixture(scope="session")
def make_leaving_client_federation():
    """Factory fixture: :func:`fedforget.testing.leaving_client_federation`."""
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
