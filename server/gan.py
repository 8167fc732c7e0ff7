"""The GAN task's ServerApp logic: train a federated conditional GAN, delete, unlearn, measure.

``fedforget simulate --task gan`` (and ``flwr run`` with ``task = "gan"``) runs
:func:`run_gan_server`: FedAvg of the GAN for ``train.rounds`` rounds; the deletion requests
arrive after ``deletion.round`` and the configured GAN strategy carries them out; FedAvg goes
on without the deleted images. Every phase's GAN is measured with paper 001's metrics
(:mod:`fedforget.gan.metrics`) against an offline classifier trained centrally on the
dataset's training split (cached): the judge, feature extractor and downstream classifier.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from pydantic import BaseModel, ConfigDict, Field

from fedforget.config import SimulationConfig
from fedforget.data import Federation, build_federation
from fedforget.data.sources import default_data_dir
from fedforget.gan import ConditionalGan, sample_images
from fedforget.gan.metrics import GanEvaluation, evaluate_gan, reference_classifier
from fedforget.models import ClassifierModel
from fedforget.report import RunObserver
from fedforget.report.observer import CheckpointObserver
from fedforget.report.summary import DeletionSummary
from fedforget.server.shared import (
    default_out_dir,
    deletion_summary,
    gan_factory,
    reference_retrain,
)
from fedforget.strategies.gan import FederatedGan, build_gan_strategy
from fedforget.training import resolve_device

LEARNING_SAMPLES = 2000  # remaining training images the discriminator AUC compares with
GRID_SAMPLES = 8  # drawings per class in the pictures


class GanSummary(BaseModel):
    """``summary.json`` of a GAN-task run."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: dict[str, Any]
    phases: dict[str, GanEvaluation]
    deletion: DeletionSummary
    unlearning: dict[str, Any] = Field(default_factory=dict)
    round_seconds: list[float] = Field(default_factory=list)
    unlearning_seconds: float | None = None
    retrain_seconds: float | None = None
    total_seconds: float = 0.0
    judge: str = ""
    out_dir: Path | None = None


class GanEvaluator:
    """Scores GANs of one federation with paper 001's metrics (see :mod:`fedforget.gan.metrics`).

    The AUC's unlearning images are the federation's D_f and its learning images a seeded
    sample of the retained training images; the real images for the distances are the test
    split. The judge is a LeNet-5 trained centrally on the training split, cached under the
    data folder (it is an instrument of measurement, not part of the federation).
    """

    def __init__(self, config: SimulationConfig, federation: Federation, device: torch.device):
        self.federation = federation
        self.device = device
        self.seed = config.seed
        self.forgotten = tuple(config.deletion.forget_classes)
        cache = _judge_path(config, federation)
        self.judge: ClassifierModel = reference_classifier(
            federation.train,
            federation.num_classes,
            seed=config.seed,
            epochs=config.gan.judge_epochs,
            cache_path=cache,
            device=device,
        )
        self.judge_name = f"LeNet-5 trained centrally on the training split ({cache.name})"
        rng = np.random.default_rng(config.seed)
        retained = federation.retain_indices()
        pick = rng.choice(len(retained), min(LEARNING_SAMPLES, len(retained)), replace=False)
        self.learning = federation.train.subset(np.sort(retained[pick]))
        self.unlearning = federation.forget_set()

    def evaluate(self, gan: ConditionalGan) -> GanEvaluation:
        """Every metric of ``gan``."""
        return evaluate_gan(
            gan,
            self.judge,
            self.federation.test,
            forgotten_classes=self.forgotten,
            learning=self.learning,
            unlearning=self.unlearning if len(self.unlearning) else None,
            seed=self.seed,
            device=self.device,
        )


def _judge_path(config: SimulationConfig, federation: Federation) -> Path:
    folder = config.data.data_dir or default_data_dir()
    name = (
        f"judge-{config.data.dataset}-{len(federation.train)}-seed{config.seed}"
        f"-e{config.gan.judge_epochs}.pt"
    )
    return Path(folder) / "judges" / name


def gan_from_state(config: SimulationConfig, federation: Federation, state: dict) -> ConditionalGan:
    """The federation's GAN with the NumPy ``state``."""
    gan = gan_factory(config, federation)()
    gan.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return gan.eval()


def make_gan_strategy(
    config: SimulationConfig,
    name: str,
    federation: Federation,
    observer: RunObserver,
    device: torch.device,
    branch: str | None = None,
) -> FederatedGan:
    """The strategy ``name`` of the GAN task, wired to this federation."""
    return build_gan_strategy(
        config,
        name,
        num_classes=federation.num_classes,
        branch=branch,
        build_model=gan_factory(config, federation),
        observer=observer,
        device=device,
    )


def run_gan_server(
    grid: Grid, config: SimulationConfig, display: RunObserver | None = None
) -> GanSummary:
    """The whole GAN-task run on ``grid``; writes ``summary.json`` and pictures."""
    started = time.perf_counter()
    federation = build_federation(config)
    device = resolve_device(config.resources.server_device)
    out_dir = default_out_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    observer = CheckpointObserver(display)
    strategy = make_gan_strategy(config, config.strategy, federation, observer, device)
    initial = ArrayRecord(gan_factory(config, federation)().state_dict())
    result = strategy.start(grid, initial, num_rounds=config.train.rounds)
    states = {
        "before_deletion": observer.states.get("before_deletion"),
        "after_unlearning": observer.states.get("after_unlearning"),
        "final": {k: v.numpy() for k, v in result.arrays.items()},
    }
    retrain_seconds = None
    if config.reference == "retrain" and strategy.deletion.round:
        states["reference"], retrain_seconds = reference_retrain(
            strategy, grid, config.train.rounds
        )
    evaluator = GanEvaluator(config, federation, device)
    gans = {
        name: gan_from_state(config, federation, state)
        for name, state in states.items()
        if state is not None
    }
    summary = GanSummary(
        config=json.loads(config.to_json()),
        phases={name: evaluator.evaluate(gan) for name, gan in gans.items()},
        deletion=deletion_summary(strategy, config),
        unlearning=strategy.unlearning_report,
        round_seconds=strategy.round_seconds,
        unlearning_seconds=strategy.deletion.unlearning_seconds
        if strategy.deletion.round
        else None,
        retrain_seconds=retrain_seconds,
        total_seconds=time.perf_counter() - started,
        judge=evaluator.judge_name,
        out_dir=out_dir,
    )
    write_gan_summary(summary, gans, out_dir)
    return summary


def write_gan_summary(summary: GanSummary, gans: dict[str, ConditionalGan], out_dir: Path) -> None:
    """``summary.json``, ``samples.png`` (a grid per phase) and each phase's weights."""
    (out_dir / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
    for name, gan in gans.items():
        torch.save(gan.state_dict(), out_dir / f"gan-{name}.pt")
    plot_gan_samples(gans, out_dir / "samples.png")


def plot_gan_samples(gans: dict[str, ConditionalGan], path: Path, seed: int = 0) -> Path:
    """One panel per GAN: a row per class, :data:`GRID_SAMPLES` drawings each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(gans)
    classes = next(iter(gans.values())).num_classes
    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names), 2.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        labels = np.repeat(np.arange(classes), GRID_SAMPLES)
        images = sample_images(gans[name], labels, seed)
        ax.imshow(_mosaic(images, classes), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _mosaic(images: np.ndarray, rows: int) -> np.ndarray:
    """``(rows x cols)`` tiles of ``(N, C, H, W)`` images as one grey picture."""
    n, _, h, w = images.shape
    cols = n // rows
    grey = images.mean(axis=1).reshape(rows, cols, h, w)
    return grey.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
