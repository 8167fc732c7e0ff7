"""Skyeye's GAN training: the losses (Eq. 10-11) and Algorithm 2, C_u as a frozen third player."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedforget.data import ArrayDataset
from fedforget.training import resolve_device, seeded_batches, to_tensors
from fedforget.verification.base import (
    ProgressFn,
    frozen_copy,
)
from fedforget.verification.networks import ConditionalGenerator, build_gan
from fedforget.verification.skyeye_config import GENERATE_BATCH, SkyeyeConfig

# --------------------------------------------------------------------------------------
# Losses (Eq. 10 and 11)
# --------------------------------------------------------------------------------------


def generator_loss(
    fake_logits: Tensor, class_logits: Tensor, labels: Tensor, mu_d: float, mu_c: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 10: ``l_G = -mu_d log D(G(z, y)) - mu_c y log C_u(G(z, y))``.

    Parameters
    ----------
    fake_logits : Tensor
        Discriminator logits ``(N,)`` of the drawings; ``D = sigmoid(logit)``.
    class_logits : Tensor
        C_u's logits ``(N, C)`` of the drawings.
    labels : Tensor
        The labels ``y_r`` ``(N,)`` the drawings were conditioned on.
    mu_d, mu_c : float
        Weights of the two terms.

    Returns
    -------
    tuple of Tensor
        ``l_G``, the adversarial term ``-log D`` and the classifier term (cross-entropy),
        each a batch mean.
    """
    adversarial = -F.logsigmoid(fake_logits).mean()
    classifier = F.cross_entropy(class_logits, labels)
    return mu_d * adversarial + mu_c * classifier, adversarial, classifier


def discriminator_loss(
    fake_logits: Tensor, real_logits: Tensor, mu_f: float, mu_r: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 11: ``l_D = -mu_f log(1 - D(G(z, y))) - mu_r log D(x)``.

    Parameters
    ----------
    fake_logits, real_logits : Tensor
        Discriminator logits ``(N,)`` of drawings and of real images.
    mu_f, mu_r : float
        Weights of the two terms.

    Returns
    -------
    tuple of Tensor
        ``l_D``, the fake term ``-log(1 - D(G))`` and the real term ``-log D(x)``, batch means.
    """
    fake = -F.logsigmoid(-fake_logits).mean()
    real = -F.logsigmoid(real_logits).mean()
    return mu_f * fake + mu_r * real, fake, real


# --------------------------------------------------------------------------------------
# Training (Algorithm 2)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedGenerator:
    """A generator trained by :func:`train_generator` (eval mode, on the CPU)."""

    generator: ConditionalGenerator = field(repr=False)
    steps: int
    seconds: float
    metrics: dict[str, float]


def _batches(n: int, batch_size: int, order: torch.Generator):
    """Endless full-size seeded batches (the whole data when it is smaller than a batch)."""
    size = min(batch_size, n)
    while True:
        for batch in seeded_batches(n, size, order):
            if len(batch) == size:
                yield batch


def train_generator(
    classifier: nn.Module,
    real: ArrayDataset,
    num_classes: int,
    config: SkyeyeConfig | None = None,
    progress: ProgressFn | None = None,
    phase: str = "skyeye",
) -> TrainedGenerator:
    """Algorithm 2: train G and D alternately with the frozen classifier C_u.

    Parameters
    ----------
    classifier : nn.Module
        C_u, the model under verification (returns logits); left unchanged.
    real : ArrayDataset
        The user's local images in [0, 1] (labels unused).
    num_classes : int
        Number of classes of C_u.
    config : SkyeyeConfig, optional
        Settings; defaults when ``None``.
    progress : callable, optional
        ``progress(phase, step, total, metrics)`` every ``log_every`` steps and after the last.
    phase : str
        The phase name passed to ``progress``.

    Returns
    -------
    TrainedGenerator
        The generator (eval mode, CPU), the steps done, the seconds and the last metrics.

    Raises
    ------
    ValueError
        If ``real`` has fewer than two images or the architecture does not fit its shape.
    """
    cfg = config or SkyeyeConfig()
    if len(real) < 2:
        raise ValueError("Skyeye needs at least two real images")
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        generator, discriminator = build_gan(
            cfg.architecture, num_classes, real.x.shape[1:], cfg.z_dim, cfg.width
        )
    generator.to(device).train()
    discriminator.to(device).train()
    judge_c = frozen_copy(classifier, device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)
    x, _ = to_tensors(real, device)
    rng = torch.Generator().manual_seed(cfg.seed)
    batches = _batches(len(real), cfg.batch_size, rng)
    window: dict[str, list[float]] = {}
    metrics: dict[str, float] = {}
    step = 0
    while step < cfg.steps:
        if cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds:
            break
        real_batch = x[next(batches).to(device)]
        d_stats = _discriminator_step(generator, discriminator, opt_d, real_batch, cfg, rng)
        for _ in range(cfg.generator_steps):
            g_stats = _generator_step(
                generator, discriminator, judge_c, opt_g, len(real_batch), cfg, rng
            )
        step += 1
        for key, value in {**d_stats, **g_stats}.items():
            window.setdefault(key, []).append(value)
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics = {key: float(np.mean(values)) for key, values in window.items()}
            window.clear()
            if progress is not None:
                progress(phase, step, cfg.steps, metrics)
    if window:
        metrics = {key: float(np.mean(values)) for key, values in window.items()}
        if progress is not None:
            progress(phase, step, cfg.steps, metrics)
    generator.cpu().eval()
    return TrainedGenerator(generator, step, time.perf_counter() - started, metrics)


def _noise(n: int, cfg: SkyeyeConfig, num_classes: int, rng: torch.Generator, device):
    """Fresh ``z ~ N(0, I)`` and uniform labels ``y_r``, drawn on the CPU for reproducibility."""
    z = torch.randn(n, cfg.z_dim, generator=rng)
    y = torch.randint(0, num_classes, (n,), generator=rng)
    return z.to(device), y.to(device)


def _discriminator_step(
    generator: ConditionalGenerator,
    discriminator: nn.Module,
    optimizer: torch.optim.Optimizer,
    real_batch: Tensor,
    cfg: SkyeyeConfig,
    rng: torch.Generator,
) -> dict[str, float]:
    """Algorithm 2 lines 4-8: one D step on a real batch and a fresh (detached) fake batch."""
    z, y = _noise(len(real_batch), cfg, generator.num_classes, rng, real_batch.device)
    with torch.no_grad():
        fake = generator(z, y)
    fake_logits, real_logits = discriminator(fake), discriminator(real_batch)
    loss, _, _ = discriminator_loss(fake_logits, real_logits, cfg.mu_f, cfg.mu_r)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {
        "loss_d": float(loss.detach()),
        "d_real": float(torch.sigmoid(real_logits.detach()).mean()),
        "d_fake": float(torch.sigmoid(fake_logits.detach()).mean()),
    }


def _generator_step(
    generator: ConditionalGenerator,
    discriminator: nn.Module,
    classifier: nn.Module,
    optimizer: torch.optim.Optimizer,
    n: int,
    cfg: SkyeyeConfig,
    rng: torch.Generator,
) -> dict[str, float]:
    """Algorithm 2 lines 11-15: one G step through D and the frozen C_u (Eq. 10)."""
    device = next(generator.parameters()).device
    z, y = _noise(n, cfg, generator.num_classes, rng, device)
    fake = generator(z, y)
    class_logits = classifier(fake)
    loss, adversarial, ce = generator_loss(discriminator(fake), class_logits, y, cfg.mu_d, cfg.mu_c)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {
        "loss_g": float(loss.detach()),
        "loss_g_d": float(adversarial.detach()),
        "loss_g_c": float(ce.detach()),
        "c_acc": float((class_logits.detach().argmax(1) == y).float().mean()),
    }


# --------------------------------------------------------------------------------------
# Drawing (read by the judge and by the report)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    generator: ConditionalGenerator,
    labels: np.ndarray | Sequence[int],
    seed: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Draw one image per label with seeded noise, the generator in eval mode.

    Returns
    -------
    np.ndarray
        float32 images ``(len(labels), C, H, W)`` in [0, 1]. The generator is left on ``device``
        in eval mode.
    """
    device = torch.device(device)
    generator.to(device).eval()
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    z = torch.randn(len(y), generator.z_dim, generator=torch.Generator().manual_seed(seed))
    chunks = [
        generator(z[i : i + GENERATE_BATCH].to(device), y[i : i + GENERATE_BATCH].to(device))
        .cpu()
        .numpy()
        for i in range(0, len(y), GENERATE_BATCH)
    ]
    if not chunks:
        return np.empty((0, *generator.image_shape), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
