"""Optimisation-based GAN inversion for a conditional generator (paper 001, section 3.5).

Given images ``x`` and their labels ``y``, find latent codes ``z`` with ``G(z, y) ~ x`` by
minimising, with Adam, the pixel MSE plus (optionally) the MSE of a feature extractor's
outputs (the perceptual term). Several random restarts are run and, per image, the code with
the lowest loss is kept. Paper 001 uses this kind of inversion for StyleGAN2 (section 5.1,
"optimized-based inversion") to find the ground-truth latent code of each unlearning image
(section 4.3).

Choices:

* The generator runs in **eval mode** (batch norm on its running statistics): the codes then
  reproduce the images exactly as :func:`fedforget.gan.training.sample_images` would draw
  them, and a batch of images does not change the running statistics.
* The label is the image's own label: in a conditional GAN the label is part of the latent
  input and is known, so only ``z`` is searched.
* Restarts start from ``N(0, I)`` codes drawn from one seeded generator, so the result is
  reproducible; images are processed in batches (each image's optimisation is independent,
  the batch only shares the forward pass).
* An optional ``prior_weight`` adds ``prior_weight * mean(z^2)`` to keep codes near the
  typical set of the prior; 0 by default (the paper names no regulariser).

Cost and reconstruction error on MNIST: ``docs/results.md``, "GAN inversion".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.nn import functional as F

from fedforget.verification.networks import ConditionalGenerator

__all__ = ["InversionResult", "InversionSettings", "invert", "reconstruction_error"]


class InversionSettings(BaseModel):
    """Options of :func:`invert` (unknown options are errors).

    Attributes
    ----------
    steps : int
        Adam steps per restart.
    lr : float
        Adam learning rate on ``z``.
    restarts : int
        Random initialisations; the best code per image is kept.
    perceptual_weight : float
        Weight of the feature-space MSE (needs a feature extractor); 0 disables it.
    prior_weight : float
        Weight of ``mean(z^2)``; 0 disables it.
    batch_size : int
        Images optimised together.
    seed : int
        Seed of the initial codes.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=100, ge=1)
    lr: float = Field(default=0.05, gt=0)
    restarts: int = Field(default=2, ge=1)
    perceptual_weight: float = Field(default=0.0, ge=0)
    prior_weight: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=512, ge=1)
    seed: int = 0


@dataclass(frozen=True)
class InversionResult:
    """Latent codes found by :func:`invert`.

    Attributes
    ----------
    z : Tensor
        ``(N, z_dim)`` codes on the CPU.
    error : np.ndarray
        ``(N,)`` pixel MSE between ``G(z, y)`` and the image.
    """

    z: Tensor
    error: np.ndarray

    @property
    def mean_error(self) -> float:
        """Mean pixel MSE over the images (NaN when there are none)."""
        return float(self.error.mean()) if len(self.error) else float("nan")


def _per_image_mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error per image ``(N,)``."""
    return (a - b).pow(2).flatten(1).mean(dim=1)


def _loss(
    generator: ConditionalGenerator,
    z: Tensor,
    x: Tensor,
    y: Tensor,
    features: Callable[[Tensor], Tensor] | None,
    target_features: Tensor | None,
    cfg: InversionSettings,
) -> Tensor:
    """Per-image inversion loss ``(N,)``."""
    fake = generator(z, y)
    loss = _per_image_mse(fake, x)
    if features is not None and target_features is not None and cfg.perceptual_weight > 0:
        loss = loss + cfg.perceptual_weight * _per_image_mse(features(fake), target_features)
    if cfg.prior_weight > 0:
        loss = loss + cfg.prior_weight * z.pow(2).mean(dim=1)
    return loss


def _invert_batch(
    generator: ConditionalGenerator,
    x: Tensor,
    y: Tensor,
    features: Callable[[Tensor], Tensor] | None,
    cfg: InversionSettings,
    rng: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Best code and its pixel MSE for one batch, over ``cfg.restarts`` restarts."""
    target_features = None
    if features is not None and cfg.perceptual_weight > 0:
        with torch.no_grad():
            target_features = features(x)
    best_z = torch.zeros(len(x), generator.z_dim, device=x.device)
    best_loss = torch.full((len(x),), float("inf"), device=x.device)
    for _ in range(cfg.restarts):
        z = torch.randn(len(x), generator.z_dim, generator=rng).to(x.device).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=cfg.lr)
        for _ in range(cfg.steps):
            loss = _loss(generator, z, x, y, features, target_features, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
        with torch.no_grad():
            final = _loss(generator, z, x, y, features, target_features, cfg)
            better = final < best_loss
            best_loss = torch.where(better, final, best_loss)
            best_z[better] = z.detach()[better]
    with torch.no_grad():
        error = _per_image_mse(generator(best_z, y), x)
    return best_z.cpu(), error.cpu()


def invert(
    generator: ConditionalGenerator,
    images: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    *,
    settings: InversionSettings | None = None,
    feature_extractor: Callable[[Tensor], Tensor] | None = None,
    device: torch.device | None = None,
) -> InversionResult:
    """Find ``z`` with ``G(z, y) ~ x`` for every image (see the module docstring).

    Parameters
    ----------
    generator : ConditionalGenerator
        The conditional generator ``G(z, y)``; its weights and mode are left unchanged.
    images : array or Tensor
        ``(N, C, H, W)`` images in [0, 1].
    labels : array or Tensor
        ``(N,)`` int labels (the condition).
    settings : InversionSettings, optional
        Steps, learning rate, restarts, loss weights, batch size, seed.
    feature_extractor : callable, optional
        Maps images to features (e.g. a classifier's ``embed``) for the perceptual term.
    device : torch.device, optional
        Where to compute (CPU by default).

    Returns
    -------
    InversionResult
        Codes ``(N, z_dim)`` and the per-image pixel MSE.
    """
    cfg = settings or InversionSettings()
    device = device or torch.device("cpu")
    x_all = torch.as_tensor(np.asarray(images, dtype=np.float32))
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(x_all) != len(y_all):
        raise ValueError(f"invert got {len(x_all)} images but {len(y_all)} labels")
    was_training = generator.training
    flags = [p.requires_grad for p in generator.parameters()]
    generator.to(device).eval().requires_grad_(False)
    rng = torch.Generator().manual_seed(cfg.seed)
    zs, errors = [], []
    try:
        for start in range(0, len(x_all), cfg.batch_size):
            x = x_all[start : start + cfg.batch_size].to(device)
            y = y_all[start : start + cfg.batch_size].to(device)
            z, err = _invert_batch(generator, x, y, feature_extractor, cfg, rng)
            zs.append(z)
            errors.append(err)
    finally:
        for p, flag in zip(generator.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        generator.train(was_training)
    if not zs:
        return InversionResult(torch.zeros(0, generator.z_dim), np.zeros(0, dtype=np.float32))
    return InversionResult(torch.cat(zs), torch.cat(errors).numpy())


def reconstruction_error(
    generator: ConditionalGenerator, z: Tensor, images: np.ndarray | Tensor, labels: Tensor
) -> np.ndarray:
    """Per-image pixel MSE of ``G(z, y)`` against ``images`` (eval mode, no gradients)."""
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        x = torch.as_tensor(np.asarray(images, dtype=np.float32))
        fake = generator(z, torch.as_tensor(labels, dtype=torch.long))
        error = F.mse_loss(fake, x, reduction="none").flatten(1).mean(dim=1)
    generator.train(was_training)
    return error.numpy()
