"""SPD-GAN unlearning degree (paper 003, section 3.3, Algorithm 2, Eq. 9-12; section 4.1).

An autoencoder generator ``G`` learns a *slight* perturbation of the forgotten data D_f (the
paper's D_UL) such that the source model ``M`` (before unlearning) still classifies the
perturbed data ``D_p = D_f + G(D_f)`` correctly while the unlearned model ``M_UL`` does not
(Eq. 9). ``M`` and ``M_UL`` are frozen and act as a joint discriminator; only ``G`` is trained,
with Algorithm 2's loss (Eq. 11)::

    loss = CE(M(x + G(x)), y) - eta * CE(M_UL(x + G(x)), y)

and the unlearning degree is Eq. 12, ``degree = acc(M, D_p) - acc(M_UL, D_p)``.

Choices where the paper is vague or inconsistent:

- **Loss.** Eq. 10 is written in GAN form, ``E[log(1 - M(G(z) + x))] - E[log M_UL(G(z) + x)]``,
  whose second term taken literally would *reward* ``M_UL`` for being right; Eq. 11 and
  Algorithm 2 (lines 5-7) state the intent unambiguously with cross-entropies against the
  labels ``Y`` of D_f, and we implement those. The generator's input is the data itself
  (Algorithm 2 line 2, ``G(D_UL) + D_UL``), not a latent ``z``. Each cross-entropy is a batch
  mean; the ``-eta * CE`` term is not clipped (its gradient is bounded by the softmax's).
  ``eta = 0.03`` as in section 4.1.
- **Bounded perturbation.** Section 4.1 bounds the generator's output with Tanh to [-1, 1],
  which on images in [0, 1] is no "slight" perturbation. We scale it: ``G(x) = epsilon *
  tanh(...)``, so every pixel moves by at most ``epsilon`` (default 0.1, i.e. about 25/255,
  small enough that digits and CIFAR images stay plainly recognisable), and by default clamp
  ``x + G(x)`` to the images' [0, 1] range so D_p is a valid image set (``clamp=False`` and
  ``epsilon=1`` give the paper's literal construction).
- **Architecture** (section 4.1, "(two Conv2d)-BatchNorm-Conv2d-BatchNorm" encoder,
  "ConvTranspose2d-BatchNorm-ConvTranspose2d-Conv2d" decoder, LeakyReLU / ReLU, Tanh): kernel
  sizes, strides and widths are not given. Encoder: Conv 3x3 stride 1 (``width``), Conv 4x4
  stride 2 (``2 width``) + BN, Conv 4x4 stride 2 (``4 width``) + BN, LeakyReLU(0.2) after each.
  Decoder: ConvTranspose 4x4 stride 2 (``2 width``) + BN + ReLU, ConvTranspose 4x4 stride 2
  (``width``) + ReLU, Conv 3x3 to the image channels, Tanh. The transposed convolutions are
  given the encoder's feature-map sizes as ``output_size``, so any image of at least 4x4 pixels
  (28x28x1, 32x32x3, 8x8x1, odd or non-square sizes) comes back in its own shape.
- **Training** ("while Epochs", no schedule given): Adam (the optimiser of section 4.1) with
  ``lr`` 1e-3 for the generator, ``epochs`` passes over D_f in seeded mini-batches of 64,
  generator in train mode (batch norm on batch statistics). D_p (Algorithm 2 line 9) is then
  computed with the generator in eval mode, on the same D_f it was trained on, as in the paper.
  D_f larger than ``max_samples`` (2,000) is first subsampled (seeded) to bound the run time.
- **Defaults, by measurement** (MNIST, LeNet-5, deletion of class 3). The degree is the
  outcome of an optimisation, so it grows with the budget (epochs, ``epsilon``); the control --
  D = a *retained* class, where retrained, distilled and LAU models are as good as the original
  -- stayed near 0 in every setting tried, so the generator does not manufacture a degree out of
  mere differences between two models that both know the data. We keep ``epsilon`` 0.1
  (perturbed digits look unchanged) and 20 epochs (about a minute for 2,000 images on one CPU
  thread). Degrees are comparable only under the same settings, which ``spd.json`` records. The
  runs: ``docs/results.md``, "SPD-GAN defaults".
- **Performance** ``P`` is top-1 accuracy against D_f's labels (the paper's choice). In backdoor
  mode D_f carries the backdoor target label, so ``P`` is then the backdoor success rate.
- **Range.** The paper states ``degree`` in ``[0, 1 - 1/C]``, the ceiling reached when ``M`` is
  perfect on D_p and ``M_UL`` is at chance. We report Eq. 12 unclipped: it is exactly 0 when
  ``M_UL`` equals ``M``, can be slightly negative, and exceeds ``1 - 1/C`` when ``M_UL`` is worse
  than chance on D_p (a model that never predicts a deleted class scores 0 on it).
  ``max_degree = 1 - 1/C`` is reported alongside for reference.

The models are deep-copied, frozen and put in eval mode; the caller's models are left as they
were. Nothing here imports Flower.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn import functional as F

from fedforget.data import ArrayDataset
from fedforget.training import (
    accuracy,
    predict_proba,
    resolve_device,
    seeded_batches,
    to_tensors,
    train_epoch,
)
from fedforget.verification.base import (
    ProgressFn,
    VerificationTask,
    Verifier,
    frozen_copy,
    register_verifier,
)
from fedforget.verification.figures import image_grid, save_figure, show_image

__all__ = [
    "SPD_IMAGE_FILE",
    "SPD_JSON_FILE",
    "PerturbationGenerator",
    "SpdConfig",
    "SpdResult",
    "SpdVerifier",
    "spd_degree",
    "spd_loss",
    "write_spd",
]

SPD_JSON_FILE = "spd.json"
SPD_IMAGE_FILE = "spd.png"
MIN_IMAGE_SIDE = 4  # two stride-2 convolutions need at least 4 pixels per side


class SpdConfig(BaseModel):
    """Settings of the SPD-GAN unlearning-degree measure (defaults: see the module docstring).

    Attributes
    ----------
    eta : float
        Weight of the unlearned model's cross-entropy in Eq. 11 (paper: 0.03).
    epsilon : float
        Largest change of any pixel, ``|G(x)| <= epsilon``, images being in [0, 1].
    clamp : bool
        Clamp ``x + G(x)`` to [0, 1].
    epochs : int
        Passes of generator training over D_f.
    lr : float
        Adam learning rate of the generator.
    batch_size : int
        Mini-batch size.
    width : int
        Channels of the generator's first convolution (doubled at each of two downsamplings).
    max_samples : int or None
        Subsample D_f (seeded) to at most this many samples; ``None`` uses all of it.
    preview : int
        Number of D_f images (with their perturbed versions) kept for the PNG.
    seed : int
        Seed of the generator's initialisation, the subsample and the batch order.
    device : str
        ``auto`` (GPU when present), ``cpu``, ``cuda``, ...
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    eta: float = Field(0.03, ge=0.0)
    epsilon: float = Field(0.1, gt=0.0, le=1.0)
    clamp: bool = True
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    batch_size: int = Field(64, ge=1)
    width: int = Field(32, ge=1)
    max_samples: int | None = Field(2000, ge=1)
    preview: int = Field(8, ge=0)
    seed: int = 0
    device: str = "auto"


class PerturbationGenerator(nn.Module):
    """SPD-GAN's autoencoder generator: a bounded perturbation ``G(x)`` of an image batch.

    Parameters
    ----------
    in_channels : int
        Image channels ``C``.
    epsilon : float
        Bound of the output: ``G(x) = epsilon * tanh(decoder(encoder(x)))``.
    width : int
        Channels of the first convolution.
    """

    def __init__(self, in_channels: int, epsilon: float, width: int = 32) -> None:
        super().__init__()
        self.epsilon = float(epsilon)
        w1, w2, w4 = width, 2 * width, 4 * width
        self.enc1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1)
        self.enc2 = nn.Conv2d(w1, w2, 4, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(w2)
        self.enc3 = nn.Conv2d(w2, w4, 4, stride=2, padding=1)
        self.bn3 = nn.BatchNorm2d(w4)
        self.dec1 = nn.ConvTranspose2d(w4, w2, 4, stride=2, padding=1)
        self.bn4 = nn.BatchNorm2d(w2)
        self.dec2 = nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1)
        self.out = nn.Conv2d(w1, in_channels, 3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Return the perturbation, same shape as ``x``, every value in ``[-eps, eps]``.

        Raises
        ------
        ValueError
            If the image is smaller than 4 pixels on a side.
        """
        if min(x.shape[-2:]) < MIN_IMAGE_SIDE:
            raise ValueError(f"SPD generator needs images of at least 4x4; got {tuple(x.shape)}")
        h1 = F.leaky_relu(self.enc1(x), 0.2)
        h2 = F.leaky_relu(self.bn2(self.enc2(h1)), 0.2)
        h3 = F.leaky_relu(self.bn3(self.enc3(h2)), 0.2)
        u2 = F.relu(self.bn4(self.dec1(h3, output_size=h2.shape[-2:])))
        u1 = F.relu(self.dec2(u2, output_size=h1.shape[-2:]))
        return self.epsilon * torch.tanh(self.out(u1))


def perturb(generator: PerturbationGenerator, x: Tensor, clamp: bool) -> Tensor:
    """Algorithm 2 line 2: ``x + G(x)``, clamped to [0, 1] when ``clamp``."""
    perturbed = x + generator(x)
    return perturbed.clamp(0.0, 1.0) if clamp else perturbed


def spd_loss(
    source_logits: Tensor, unlearned_logits: Tensor, y: Tensor, eta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 11 / Algorithm 2 lines 5-7: ``CE(M) - eta * CE(M_UL)``.

    Parameters
    ----------
    source_logits, unlearned_logits : Tensor
        Logits ``(N, C)`` of ``M`` and ``M_UL`` on the perturbed batch.
    y : Tensor
        Labels of D_f, shape ``(N,)``.
    eta : float
        Weight of the unlearned model's term.

    Returns
    -------
    tuple of Tensor
        The loss to minimise, ``loss_M`` and ``loss_M_UL`` (batch means).
    """
    loss_source = F.cross_entropy(source_logits, y)
    loss_unlearned = F.cross_entropy(unlearned_logits, y)
    return loss_source - eta * loss_unlearned, loss_source, loss_unlearned


@dataclass(frozen=True)
class SpdResult:
    """Outcome of :func:`spd_degree`.

    ``degree = source_accuracy - unlearned_accuracy`` (Eq. 12, on D_p); the ``clean_*``
    accuracies are on the unperturbed D_f, for comparison with Eq. 9's
    ``P(M, D_p) ~ P(M, D_UL)``. ``originals`` / ``perturbed`` hold ``config.preview`` images
    for the PNG, with the labels and both models' predictions on the perturbed ones.
    """

    degree: float
    source_accuracy: float
    unlearned_accuracy: float
    source_clean_accuracy: float
    unlearned_clean_accuracy: float
    max_degree: float
    num_classes: int
    samples: int
    mean_abs_perturbation: float
    final_loss: float
    seconds: float
    config: SpdConfig
    originals: np.ndarray = field(repr=False)
    perturbed: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    source_predictions: np.ndarray = field(repr=False)
    unlearned_predictions: np.ndarray = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``spd.json`` (no image arrays)."""
        return {
            "method": "spd-gan",
            "degree": self.degree,
            "source_accuracy": self.source_accuracy,
            "unlearned_accuracy": self.unlearned_accuracy,
            "source_clean_accuracy": self.source_clean_accuracy,
            "unlearned_clean_accuracy": self.unlearned_clean_accuracy,
            "max_degree": self.max_degree,
            "num_classes": self.num_classes,
            "samples": self.samples,
            "mean_abs_perturbation": self.mean_abs_perturbation,
            "final_loss": self.final_loss,
            "seconds": self.seconds,
            "config": self.config.model_dump(),
        }

    def write(self, out_dir: Path) -> dict[str, Path]:
        """:func:`write_spd` into ``out_dir``."""
        return write_spd(self, out_dir)


def spd_degree(
    source_model: nn.Module,
    unlearned_model: nn.Module,
    forget: ArrayDataset,
    num_classes: int,
    config: SpdConfig | None = None,
    progress: ProgressFn | None = None,
) -> SpdResult:
    """Train SPD-GAN's generator on D_f and return the unlearning degree (Algorithm 2).

    Parameters
    ----------
    source_model : nn.Module
        ``M``, the model before unlearning (left unchanged).
    unlearned_model : nn.Module
        ``M_UL``, the model after unlearning (left unchanged).
    forget : ArrayDataset
        D_f with its labels (images in [0, 1]).
    num_classes : int
        ``C``, for ``max_degree = 1 - 1/C``.
    config : SpdConfig, optional
        Settings; defaults when ``None``.
    progress : callable, optional
        ``progress("spd", epoch, epochs, metrics)`` after every epoch.

    Returns
    -------
    SpdResult
        Degree, both accuracies on D_p and on D_f, preview images and timing.

    Raises
    ------
    ValueError
        If D_f is empty, ``num_classes < 2`` or the images are smaller than 4x4.
    """
    cfg = config or SpdConfig()
    if len(forget) == 0:
        raise ValueError("SPD-GAN needs a non-empty D_f")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    data = _subsample(forget, cfg.max_samples, cfg.seed)
    source, unlearned = frozen_copy(source_model, device), frozen_copy(unlearned_model, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator = PerturbationGenerator(data.x.shape[1], cfg.epsilon, cfg.width).to(device)
    final_loss = _train_generator(generator, source, unlearned, data, cfg, device, progress)
    perturbed = _perturb_all(generator, data.x, cfg.clamp, device)
    source_pred = predict_proba(source, perturbed, device).argmax(axis=1)
    unlearned_pred = predict_proba(unlearned, perturbed, device).argmax(axis=1)
    source_acc = float((source_pred == data.y).mean())
    unlearned_acc = float((unlearned_pred == data.y).mean())
    keep = slice(0, cfg.preview)
    return SpdResult(
        degree=source_acc - unlearned_acc,
        source_accuracy=source_acc,
        unlearned_accuracy=unlearned_acc,
        source_clean_accuracy=accuracy(source, data, device),
        unlearned_clean_accuracy=accuracy(unlearned, data, device),
        max_degree=1.0 - 1.0 / num_classes,
        num_classes=num_classes,
        samples=len(data),
        mean_abs_perturbation=float(np.abs(perturbed - data.x).mean()),
        final_loss=final_loss,
        seconds=time.perf_counter() - started,
        config=cfg,
        originals=data.x[keep].copy(),
        perturbed=perturbed[keep].copy(),
        labels=data.y[keep].copy(),
        source_predictions=source_pred[keep],
        unlearned_predictions=unlearned_pred[keep],
    )


def _subsample(data: ArrayDataset, limit: int | None, seed: int) -> ArrayDataset:
    """At most ``limit`` samples of ``data``, drawn with a seeded permutation."""
    if limit is None or len(data) <= limit:
        return data
    order = np.random.default_rng(seed).permutation(len(data))[:limit]
    return data.subset(np.sort(order))


def _train_generator(
    generator: PerturbationGenerator,
    source: nn.Module,
    unlearned: nn.Module,
    data: ArrayDataset,
    cfg: SpdConfig,
    device: torch.device,
    progress: ProgressFn | None,
) -> float:
    """Algorithm 2 lines 1-8; returns the mean loss of the last epoch."""
    x, y = to_tensors(data, device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
    order = torch.Generator().manual_seed(cfg.seed)
    generator.train()

    def batch_loss(batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        batch = batch.to(device)
        perturbed = perturb(generator, x[batch], cfg.clamp)
        loss, loss_source, loss_unlearned = spd_loss(
            source(perturbed), unlearned(perturbed), y[batch], cfg.eta
        )
        return loss, {"loss": loss, "loss_source": loss_source, "loss_unlearned": loss_unlearned}

    mean_loss = float("nan")
    for epoch in range(cfg.epochs):
        done = train_epoch(optimizer, seeded_batches(len(x), cfg.batch_size, order), batch_loss)
        mean_loss = done.losses.get("loss", 0.0)
        if progress is not None:
            progress("spd", epoch + 1, cfg.epochs, done.losses)
    return mean_loss


@torch.no_grad()
def _perturb_all(
    generator: PerturbationGenerator, x: np.ndarray, clamp: bool, device: torch.device
) -> np.ndarray:
    """Algorithm 2 line 9: D_p = D_f + G(D_f), generator in eval mode."""
    generator.eval()
    chunks = []
    for start in range(0, len(x), 1000):
        batch = torch.from_numpy(x[start : start + 1000]).to(device)
        chunks.append(perturb(generator, batch, clamp).cpu().numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)


def write_spd(result: SpdResult, out_dir: Path | str) -> dict[str, Path]:
    """Write ``spd.json`` and, when there are preview images, ``spd.png`` into ``out_dir``.

    The PNG has three rows: D_f images, their perturbed versions (titled with the predictions
    of ``M`` and ``M_UL``) and the perturbation itself, mid-grey = 0, scaled to ``+-epsilon``.

    Returns
    -------
    dict of str to Path
        ``{"json": ..., "png": ...}`` for the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / SPD_JSON_FILE}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if len(result.originals):
        paths["png"] = out / SPD_IMAGE_FILE
        _plot_preview(result, paths["png"])
    return paths


def _plot_preview(result: SpdResult, path: Path) -> None:
    """Save the three-row preview figure."""
    count = len(result.originals)
    eps = result.config.epsilon
    delta = (result.perturbed - result.originals) / (2 * eps) + 0.5
    rows = (("D_f", result.originals), ("D_p", result.perturbed), ("D_p - D_f", delta))
    fig, axes = image_grid(3, count, figsize=(1.3 * count + 0.6, 4.3))
    for r, (name, images) in enumerate(rows):
        for c in range(count):
            ax = axes[r][c]
            show_image(ax, images[c])
            if r == 1:
                src, ul = result.source_predictions[c], result.unlearned_predictions[c]
                ax.set_title(f"M:{src} UL:{ul}", fontsize=8)
            elif r == 0:
                ax.set_title(f"y={result.labels[c]}", fontsize=8)
        axes[r][0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"SPD-GAN degree {result.degree:.3f} (eps {eps:g})", fontsize=9)
    save_figure(fig, path, dpi=80)


@register_verifier
class SpdVerifier(Verifier):
    """SPD-GAN unlearning degree (paper 003), with the model before unlearning as ``M``."""

    name = "spd"
    summary = "perturb D_f so the source model keeps it; degree = accuracy gap (paper 003)"
    Settings = SpdConfig

    def check(self, task: VerificationTask) -> None:
        """SPD needs the samples the user asked to delete."""
        if task.forget is None or len(task.forget) == 0:
            raise ValueError("spd needs the samples the user asked to delete (D_f)")

    def verify(self, task: VerificationTask, progress: ProgressFn | None = None) -> SpdResult:
        """:func:`spd_degree` of the reference (source) and the verified model on D_f."""
        self.check(task)
        assert task.forget is not None
        return spd_degree(
            task.reference, task.model, task.forget, task.num_classes, self.settings, progress
        )
