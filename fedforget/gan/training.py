"""Local training of the conditional GAN, and drawing images from it.

The loss is the usual non-saturating GAN loss with a conditional discriminator:
D minimises ``-log D(x, y) - log(1 - D(G(z, y'), y'))`` on real pairs ``(x, y)`` and fake
pairs with labels ``y'`` drawn like the real ones (the batch's own labels, so each client's
label mix is respected); G minimises ``-log D(G(z, y'), y')``. Adam, beta1 = 0.5 (Radford
et al.). One D step, then one G step, per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from fedforget.data.sources import ArrayDataset
from fedforget.gan.networks import ConditionalGan
from fedforget.training import seeded_batches, to_tensors

BETAS = (0.5, 0.999)
GanProgress = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class GanTrainResult:
    """What one call of :func:`train_gan` did."""

    num_examples: int
    steps: int
    d_loss: float
    g_loss: float
    seconds: float


def noise(n: int, z_dim: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` standard Gaussian latent codes, seeded."""
    return torch.randn(n, z_dim, generator=rng).to(device)


def gan_optimizers(
    gan: ConditionalGan, lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam for D and for G (beta1 = 0.5)."""
    d_opt = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=BETAS)
    g_opt = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=BETAS)
    return d_opt, g_opt


def discriminator_step(
    gan: ConditionalGan,
    optimizer: torch.optim.Optimizer,
    real: torch.Tensor,
    labels: torch.Tensor,
    fake: torch.Tensor,
) -> float:
    """One D update on a real batch and a (detached) fake batch with the same labels."""
    real_logits = gan.discriminator(real, labels)
    fake_logits = gan.discriminator(fake.detach(), labels)
    loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def generator_step(
    gan: ConditionalGan, optimizer: torch.optim.Optimizer, z: torch.Tensor, labels: torch.Tensor
) -> float:
    """One non-saturating G update: make D call ``G(z, y)`` real."""
    loss = F.softplus(-gan.discriminator(gan.generator(z, labels), labels)).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_gan(
    gan: ConditionalGan,
    data: ArrayDataset,
    *,
    epochs: int,
    lr: float = 2e-4,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | None = None,
    progress: GanProgress | None = None,
) -> GanTrainResult:
    """Train ``gan`` in place for ``epochs`` passes over ``data`` (images in [0, 1]).

    Parameters
    ----------
    gan : ConditionalGan
        Trained in place (left in train mode on ``device``).
    data : ArrayDataset
        Real images and their labels.
    epochs, lr, batch_size, seed
        Passes, Adam learning rate, mini-batch size, seed of batch order and noise.
    device : torch.device, optional
        Where to compute (CPU by default).
    progress : callable, optional
        Called as ``progress(step, total, metrics)`` after every step.

    Returns
    -------
    GanTrainResult
    """
    if len(data) == 0:
        raise ValueError("cannot train a GAN on an empty dataset")
    device = device or torch.device("cpu")
    started = time.perf_counter()
    gan.to(device).train()
    d_opt, g_opt = gan_optimizers(gan, lr)
    x, y = to_tensors(data, device)
    rng = torch.Generator().manual_seed(seed)
    per_epoch = -(-len(x) // batch_size)
    total, step = epochs * per_epoch, 0
    d_losses, g_losses = [], []
    for _ in range(epochs):
        for batch in seeded_batches(len(x), batch_size, rng):
            if len(batch) < 2 <= len(x):  # batch norm cannot train on a single image
                continue
            batch = batch.to(device)
            labels = y[batch]
            z = noise(len(batch), gan.z_dim, rng, device)
            fake = gan.generator(z, labels)
            d_losses.append(discriminator_step(gan, d_opt, x[batch], labels, fake))
            g_losses.append(generator_step(gan, g_opt, z, labels))
            step += 1
            if progress is not None:
                progress(step, total, {"d_loss": d_losses[-1], "g_loss": g_losses[-1]})
    return GanTrainResult(
        num_examples=len(x),
        steps=step,
        d_loss=float(np.mean(d_losses)),
        g_loss=float(np.mean(g_losses)),
        seconds=time.perf_counter() - started,
    )


@torch.no_grad()
def sample_images(
    gan: ConditionalGan,
    labels: np.ndarray | torch.Tensor,
    seed: int = 0,
    device: torch.device | None = None,
    batch_size: int = 1000,
) -> np.ndarray:
    """Draw one image per label from ``G`` in eval mode; float32 ``(N, C, H, W)`` in [0, 1]."""
    device = device or torch.device("cpu")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    rng = torch.Generator().manual_seed(seed)
    was_training = gan.training
    gan.to(device).eval()
    parts = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size].to(device)
        parts.append(gan.generator(noise(len(y), gan.z_dim, rng, device), y).cpu())
    gan.train(was_training)
    if not parts:
        return np.zeros((0, *gan.image_shape), dtype=np.float32)
    return torch.cat(parts).numpy().astype(np.float32)
