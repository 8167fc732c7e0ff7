"""What the two server runs share: the classification run (:mod:`fedforget.server.app`) and
the GAN task's (:mod:`fedforget.server.gan`).

``app`` hands a GAN-task configuration to ``gan``, and ``gan`` builds its run from these
helpers: they live here so that neither of the two modules imports the other back.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget.config import SimulationConfig
from fedforget.data import Federation
from fedforget.gan import ConditionalGan, build_conditional_gan
from fedforget.report.summary import DeletionSummary
from fedforget.strategies import FederatedUnlearning
from fedforget.strategies.unlearning import band_seed


def default_out_dir(config: SimulationConfig) -> Path:
    """``runs/<time>-<strategy>-<mode>`` unless the configuration names a folder."""
    if config.out is not None:
        return config.out
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.strategy}-{config.deletion.mode}"


def gan_factory(config: SimulationConfig, federation: Federation):
    """A zero-argument constructor of the federation's conditional GAN (seeded like the run)."""
    shape = tuple(int(s) for s in federation.train.x.shape[1:])

    def build() -> ConditionalGan:
        return build_conditional_gan(
            federation.num_classes, shape, seed=config.seed, width=config.gan.width
        )

    return build


def to_numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    """A Flower ``ArrayRecord`` as NumPy arrays by key."""
    return {key: array.numpy() for key, array in arrays.items()}


def deletion_summary(strategy: FederatedUnlearning, config: SimulationConfig) -> DeletionSummary:
    """The run summary's deletion: the record of the strategy's latest step (as it is)."""
    return strategy.deletion


def reference_retrain(
    strategy: FederatedUnlearning, grid: Grid, num_rounds: int
) -> tuple[dict[str, np.ndarray], float]:
    """The reference: ``num_rounds`` of FedAvg from w_0 without the deleted data, and its time."""
    started = time.perf_counter()
    arrays = strategy.run_reference(grid, num_rounds)
    return to_numpy(arrays), time.perf_counter() - started


def reference_members(
    strategy: FederatedUnlearning, grid: Grid, num_rounds: int, config: SimulationConfig
) -> list[dict[str, np.ndarray]]:
    """The other retrains of the reference band (``reference_seeds`` - 1 of them), each with
    initial weights and batch orders of its own (phases ``reference:2``, ...)."""
    return [
        to_numpy(
            strategy.run_reference(
                grid, num_rounds, band_seed(config.seed, member), f"reference:{member}"
            )
        )
        for member in range(2, config.reference_seeds + 1)
    ]
