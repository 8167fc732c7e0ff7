"""Skyeye: a user's own check that a federated model forgot (paper 000, section IV.B).

A conditional GAN is trained on the user's machine with the *verified* classifier C_u (the
unlearned global model) as a frozen third player (Fig. 2; Algorithm 2, Appendix B): the
generator G(z, y) must fool the discriminator D (Eq. 10, first term) **and** make C_u label its
drawing ``y`` (Eq. 10, second term), so it learns to draw what C_u still knows. If the
forgotten class can no longer be drawn, the forgetting worked (Algorithm 3). Losses::

    l_G = -mu_d log D(G(z, y)) - mu_c y log C_u(G(z, y))        (Eq. 10, mu_d = mu_c = 0.5)
    l_D = -mu_f log(1 - D(G(z, y))) - mu_r log D(x)             (Eq. 11)

The paper decides by eye ("if the quality of images corresponding to the unlearned category is
poor", Algorithm 3 line 4). We make that measurable: ``samples_per_class`` images are drawn per
class and labelled by a **judge** classifier independent of C_u; the *recognition* of class c
is the share of class-c drawings the judge labels c. The pictures (a grid, and Fig. 11's
real / before / after comparison) are kept.

Choices where the paper is vague, and why:

- **Networks** (:mod:`fedforget.verification.networks`). ``architecture="paper"`` is Appendix C
  (MNIST 28x28x1, AT&T 64x64x1). The default is ``"dcgan"``, a light conditional DCGAN with
  batch norm, chosen by measurement on this project's 2-core CPU (MNIST, LeNet-5, batch 100,
  one thread): Appendix C's networks, as read, cost about 0.4 s a step and still drew blank
  images after 180 s (448 steps), while the DCGAN takes about 0.04 s a step and draws clean
  digits within 150 s (3,800 steps); the measurement is in ``docs/results.md``, "Skyeye
  networks".
  Both share Algorithm 2 and the losses; only the networks differ.
- **Discriminator output.** D returns the logit; ``D(x) = sigmoid(logit)`` and the logs of
  Eq. 10-11 are computed as ``logsigmoid(logit)`` and ``logsigmoid(-logit)``, identical values
  without overflow. Each term is a batch mean. The classifier term of Eq. 10, ``-y log C_u``
  with one-hot ``y``, is the cross-entropy of C_u's logits against ``y``.
- **Weights.** ``mu_d = mu_c = 0.5`` (section IV.B). ``mu_f`` and ``mu_r`` are not given; we
  set both to 0.5, which makes Eq. 11 half the standard GAN discriminator loss (Eq. 14).
- **Optimiser.** Adam for G and D with lr 3e-4 (section V, "evaluation framework"); betas are
  not given: ``(0.5, 0.999)``, the DCGAN setting (Radford et al.) that keeps adversarial
  training stable, where Adam's default ``beta1 = 0.9`` tends to oscillate.
- **Algorithm 2's loop.** Read as: for every real mini-batch ``b`` of the user's data, one D
  step on ``b`` and a fresh fake batch, then ``generator_steps`` (its ``j``, default 1) G steps,
  each with fresh ``z ~ N(0, I)`` and labels ``y_r`` drawn uniformly over all classes (the
  forgotten ones included: that is the point). The paper's ``N`` epochs become a budget of
  ``steps`` (one step = one real batch) and, optionally, ``max_seconds``; whichever ends first
  stops training. Batches are seeded permutations of the data, the last incomplete batch of an
  epoch is dropped (batch norm needs full batches); data smaller than a batch is used whole.
  Batch size 100 (the paper's MNIST value; AT&T: 40).
- **Real data x.** Whatever local data the user holds (an ``ArrayDataset`` in [0, 1]): the
  paper trains D on the user's dataset D. With a class deletion the user may no longer hold the
  forgotten class; D then never sees it, and only C_u can teach G to draw it -- exactly the
  knowledge under test. For a backdoor deletion pass the user's data *with* the triggered
  samples they asked to delete, so D accepts the trigger as realistic and the drawings can
  show it wherever C_u still rewards it.
- **Drawing for the decision.** G in eval mode (batch norm on its running statistics), noise
  from a generator seeded with ``seed + 1``, ``samples_per_class`` images per class (100).
- **Judge** (independent of C_u, supplied by the caller; its description goes into
  ``skyeye.json``). Recommended: **the pre-unlearning global model** the client received in the
  round before its deletion request. The client holds it anyway, it recognises every class
  (the forgotten one included) at test accuracy, and it was trained on the whole federation,
  so it is a far better digit reader than a model fit to one client's few thousand samples.
  A classifier trained on the client's own data is the alternative when no earlier model is
  at hand; after a class deletion the client may no longer hold that class, and such a judge
  could never label it (the recognition of the forgotten class would be 0 whatever C_u knows).
  Caveat: when the verified model *is* the judge (a control run on the original model), G
  optimises the judge's own decision, so recognition is an upper bound.
- **Verdict** (:class:`SkyeyeThresholds`). ``forgotten`` when every forgotten class's
  recognition is <= ``forgotten_max`` (0.20) **and** the retained classes' mean is >=
  ``retained_min_mean`` (0.85) with none under ``retained_min`` (0.50); otherwise
  ``not_forgotten``. The retained conditions certify that the GAN works: a low recognition of
  the forgotten class only means something when the same generator draws the other classes
  well; an inconclusive run is reported ``not_forgotten`` (forgetting not shown). 0.20 is twice
  chance on ten classes (a generator that cannot draw a digit still makes shapes the judge
  sometimes reads as it; a model that never learned 3 gave 11 %), far below the >= 80 % a
  model that knows the class gives. 0.85 is just under what a competent model achieves on
  every class (>= 86 % measured); 0.50 lets one retained class be hard (e.g.
  an 8, close to a forgotten 3) while a majority of its drawings must still be read right.
- **Backdoor deletions** (``backdoor_target`` and ``trigger_size``): the trigger region is
  the square :func:`fedforget.data.deletion.apply_trigger` stamps (one pixel from the
  bottom-right corner). We report its mean intensity in the target class's drawings and in the
  other classes', their ``difference`` and the shares of drawings whose region is brighter
  than 0.5. The trigger is ``present`` when the difference exceeds
  ``trigger_max_difference`` (0.20: the square is white on a dark border, so the difference is
  about the share of target drawings that carry it; 0.20 mirrors ``forgotten_max``). With a
  backdoor, the verdict is ``forgotten`` when the trigger is not present and every class
  passes the retained conditions.

The classifier and the judge are deep-copied, frozen and put in eval mode; the caller's models
are left as they were. Nothing here imports Flower.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn import functional as F

from fedforget.data import ArrayDataset
from fedforget.data.deletion import apply_trigger
from fedforget.training import predict_proba, resolve_device, seeded_batches, to_tensors
from fedforget.verification.base import (
    ProgressFn,
    VerificationTask,
    Verifier,
    as_image,
    frozen_copy,
    register_verifier,
)
from fedforget.verification.networks import Architecture, ConditionalGenerator, build_gan

__all__ = [
    "SKYEYE_COMPARISON_FILE",
    "SKYEYE_GRID_FILE",
    "SKYEYE_JSON_FILE",
    "SkyeyeConfig",
    "SkyeyeResult",
    "SkyeyeSettings",
    "SkyeyeThresholds",
    "SkyeyeVerifier",
    "TrainedGenerator",
    "decide",
    "discriminator_loss",
    "generate",
    "generator_loss",
    "judge_generator",
    "plot_before_after",
    "plot_grid",
    "recognition_rates",
    "skyeye_verify",
    "train_generator",
    "trigger_report",
    "write_skyeye",
]

SKYEYE_JSON_FILE = "skyeye.json"
SKYEYE_GRID_FILE = "skyeye_grid.png"
SKYEYE_COMPARISON_FILE = "skyeye_before_after.png"
FORGOTTEN = "forgotten"
NOT_FORGOTTEN = "not_forgotten"
Verdict = Literal["forgotten", "not_forgotten"]
DEFAULT_JUDGE = "a judge classifier supplied by the caller"
GENERATE_BATCH = 1000
BRIGHT = 0.5  # a trigger region brighter than this on average counts as carrying the trigger


class SkyeyeThresholds(BaseModel):
    """Thresholds of the verdict (defaults justified in the module docstring).

    Attributes
    ----------
    forgotten_max : float
        Largest recognition a forgotten class may keep.
    retained_min_mean : float
        Smallest mean recognition of the retained classes.
    retained_min : float
        Smallest recognition of any retained class.
    trigger_max_difference : float
        Largest trigger-region intensity difference (target minus other classes) allowed.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    forgotten_max: float = Field(0.20, ge=0.0, le=1.0)
    retained_min_mean: float = Field(0.85, ge=0.0, le=1.0)
    retained_min: float = Field(0.50, ge=0.0, le=1.0)
    trigger_max_difference: float = Field(0.20, ge=0.0, le=1.0)


class SkyeyeConfig(BaseModel):
    """Settings of the Skyeye verification (defaults: see the module docstring).

    Attributes
    ----------
    architecture : {"dcgan", "paper"}
        Networks: the light conditional DCGAN (default) or Appendix C's.
    mu_d, mu_c : float
        Weights of the discriminator and classifier terms of l_G (Eq. 10).
    mu_f, mu_r : float
        Weights of the fake and real terms of l_D (Eq. 11).
    lr : float
        Adam learning rate of G and D.
    betas : tuple of float
        Adam betas.
    batch_size : int
        Real (and fake) images per step.
    steps : int
        Training steps (one D step and ``generator_steps`` G steps each).
    max_seconds : float or None
        Stop training after this many seconds, even before ``steps``.
    generator_steps : int
        G steps after each D step (Algorithm 2's ``j``).
    z_dim : int
        Noise dimension.
    width : int
        Base channel count of the DCGAN networks.
    samples_per_class : int
        Drawings per class scored by the judge (N).
    grid_samples : int
        Drawings per class shown in the grid PNG.
    thresholds : SkyeyeThresholds
        Thresholds of the verdict.
    log_every : int
        Steps between progress reports.
    seed : int
        Seed of the initialisation, the batch order, the noise and the labels.
    device : str
        ``auto`` (GPU when present), ``cpu``, ``cuda``, ...
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    architecture: Architecture = "dcgan"
    mu_d: float = Field(0.5, ge=0.0)
    mu_c: float = Field(0.5, ge=0.0)
    mu_f: float = Field(0.5, ge=0.0)
    mu_r: float = Field(0.5, ge=0.0)
    lr: float = Field(3e-4, gt=0.0)
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = Field(100, ge=2)
    steps: int = Field(2000, ge=1)
    max_seconds: float | None = Field(None, gt=0.0)
    generator_steps: int = Field(1, ge=1)
    z_dim: int = Field(100, ge=1)
    width: int = Field(32, ge=1)
    samples_per_class: int = Field(100, ge=1)
    grid_samples: int = Field(10, ge=1)
    thresholds: SkyeyeThresholds = Field(default_factory=SkyeyeThresholds)
    log_every: int = Field(100, ge=1)
    seed: int = 0
    device: str = "auto"


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
# Decision (Algorithm 3, made measurable)
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


def recognition_rates(predictions: np.ndarray) -> dict[int, float]:
    """Per class, the share of its drawings the judge labels as that class.

    Parameters
    ----------
    predictions : np.ndarray
        Judge labels ``(C, N)``: row ``c`` holds the labels of ``N`` drawings of class ``c``.

    Returns
    -------
    dict of int to float
        Class -> recognition in [0, 1].
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be (classes, samples); got {predictions.shape}")
    return {c: float((row == c).mean()) for c, row in enumerate(predictions)}


def trigger_report(
    images: np.ndarray,
    labels: np.ndarray,
    target: int,
    size: int,
    max_difference: float = 0.20,
) -> dict[str, Any]:
    """Does the target class's drawings carry the backdoor trigger more than the others'?

    Parameters
    ----------
    images : np.ndarray
        Drawings ``(M, C, H, W)`` in [0, 1].
    labels : np.ndarray
        The class each drawing was conditioned on, ``(M,)``.
    target : int
        The backdoor's target class.
    size : int
        Side of the trigger square (placed as :func:`apply_trigger` places it).
    max_difference : float
        ``present`` when ``target_mean - other_mean`` exceeds it.

    Returns
    -------
    dict
        ``target``, ``size``, ``target_mean`` and ``other_mean`` (mean intensity of the trigger
        region), ``difference``, ``target_share`` and ``other_share`` (share of drawings whose
        region is brighter than 0.5 on average) and ``present``.
    """
    mask = apply_trigger(np.zeros((1, *images.shape[1:]), dtype=np.float32), size)[0] > 0.5
    region = images[:, mask].mean(axis=1) if len(images) else np.empty(0)
    is_target = np.asarray(labels) == target

    def _mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else float("nan")

    target_mean, other_mean = _mean(region[is_target]), _mean(region[~is_target])
    difference = target_mean - other_mean
    return {
        "target": int(target),
        "size": int(size),
        "target_mean": target_mean,
        "other_mean": other_mean,
        "difference": difference,
        "target_share": _mean(region[is_target] > BRIGHT),
        "other_share": _mean(region[~is_target] > BRIGHT),
        "present": bool(difference > max_difference),
    }


def decide(
    recognition: dict[int, float],
    forgotten_classes: Sequence[int],
    thresholds: SkyeyeThresholds | None = None,
    trigger: dict[str, Any] | None = None,
) -> tuple[Verdict, list[str]]:
    """The verdict from per-class recognition (and the trigger report, for a backdoor).

    Parameters
    ----------
    recognition : dict of int to float
        Class -> share of its drawings the judge recognises.
    forgotten_classes : sequence of int
        Classes that should be forgotten (empty for a backdoor deletion).
    thresholds : SkyeyeThresholds, optional
        Defaults when ``None``.
    trigger : dict, optional
        A :func:`trigger_report`; its ``present`` flag makes the verdict ``not_forgotten``.

    Returns
    -------
    verdict : {"forgotten", "not_forgotten"}
        ``forgotten`` only when no reason is found against it.
    reasons : list of str
        Why the verdict is ``not_forgotten`` (empty when forgotten).

    Raises
    ------
    ValueError
        If a forgotten class has no recognition, or there is nothing to verify (no forgotten
        class and no trigger report).
    """
    limits = thresholds or SkyeyeThresholds()
    forgotten = sorted(set(int(c) for c in forgotten_classes))
    missing = [c for c in forgotten if c not in recognition]
    if missing:
        raise ValueError(f"no recognition for forgotten class(es) {missing}")
    if not forgotten and trigger is None:
        raise ValueError("nothing to verify: give forgotten classes or a trigger report")
    reasons = [
        f"class {c} still recognised at {recognition[c]:.0%} > {limits.forgotten_max:.0%}"
        for c in forgotten
        if recognition[c] > limits.forgotten_max
    ]
    if trigger is not None and trigger["present"]:
        reasons.append(
            f"class {trigger['target']}'s drawings carry the trigger "
            f"(+{trigger['difference']:.2f} intensity > {limits.trigger_max_difference:.2f})"
        )
    retained = {c: r for c, r in recognition.items() if c not in forgotten}
    if retained:
        mean = float(np.mean(list(retained.values())))
        if mean < limits.retained_min_mean:
            reasons.append(
                f"retained classes recognised at {mean:.0%} on average "
                f"< {limits.retained_min_mean:.0%}: the generator is not conclusive"
            )
        reasons += [
            f"retained class {c} recognised at {r:.0%} < {limits.retained_min:.0%}"
            for c, r in retained.items()
            if r < limits.retained_min
        ]
    return (NOT_FORGOTTEN if reasons else FORGOTTEN), reasons


@dataclass(frozen=True)
class SkyeyeResult:
    """Outcome of :func:`skyeye_verify` or :func:`judge_generator`.

    :meth:`to_json` is the ``skyeye.json`` contract; the other attributes (the drawings, the
    judge's labels, the generator, training statistics) serve the pictures and diagnostics.
    """

    verdict: Verdict
    recognition: dict[int, float]
    forgotten_classes: list[int]
    thresholds: SkyeyeThresholds
    judge: str
    seconds: float
    trigger: dict[str, Any] | None
    reasons: list[str]
    samples: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)
    generator: ConditionalGenerator = field(repr=False)
    steps: int = 0
    train_metrics: dict[str, float] = field(default_factory=dict)
    config: SkyeyeConfig = field(default_factory=SkyeyeConfig)
    before: ConditionalGenerator | None = field(default=None, repr=False)
    before_recognition: dict[int, float] | None = None
    real: ArrayDataset | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """``verdict``, ``recognition`` (string keys), ``forgotten_classes``, ``thresholds``,
        ``judge``, ``seconds``; for a backdoor deletion ``trigger``; with a control run on
        the model before unlearning, ``before_recognition``."""
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "recognition": {str(c): r for c, r in sorted(self.recognition.items())},
            "forgotten_classes": list(self.forgotten_classes),
            "thresholds": self.thresholds.model_dump(),
            "judge": self.judge,
            "seconds": self.seconds,
        }
        if self.trigger is not None:
            out["trigger"] = dict(self.trigger)
        if self.before_recognition is not None:
            out["before_recognition"] = {
                str(c): r for c, r in sorted(self.before_recognition.items())
            }
        return out

    def write(self, out_dir: Path) -> dict[str, Path]:
        """:func:`write_skyeye` with this result's control generator and real images."""
        return write_skyeye(self, out_dir, before=self.before, real=self.real)


def judge_generator(
    generator: ConditionalGenerator,
    judge: nn.Module,
    *,
    forgotten_classes: Sequence[int] = (),
    judge_name: str = DEFAULT_JUDGE,
    backdoor_target: int | None = None,
    trigger_size: int | None = None,
    config: SkyeyeConfig | None = None,
    steps: int = 0,
    train_metrics: dict[str, float] | None = None,
    seconds: float = 0.0,
) -> SkyeyeResult:
    """Algorithm 3 made measurable: draw, let the judge read, decide.

    Parameters
    ----------
    generator : ConditionalGenerator
        A trained generator.
    judge : nn.Module
        A classifier independent of the verified model (see the module docstring); unchanged.
    forgotten_classes : sequence of int
        Classes that should be forgotten (class deletion).
    judge_name : str
        Description of the judge for ``skyeye.json``.
    backdoor_target, trigger_size : int, optional
        Both given for a backdoor deletion: adds the ``trigger`` report.
    config : SkyeyeConfig, optional
        Uses ``samples_per_class``, ``thresholds``, ``seed`` and ``device``.
    steps, train_metrics, seconds
        Training statistics carried into the result (``seconds`` is added to the decision's).

    Returns
    -------
    SkyeyeResult
    """
    cfg = config or SkyeyeConfig()
    if (backdoor_target is None) != (trigger_size is None):
        raise ValueError("give both backdoor_target and trigger_size, or neither")
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    classes, n = generator.num_classes, cfg.samples_per_class
    labels = np.repeat(np.arange(classes), n)
    images = generate(generator, labels, cfg.seed + 1, device)
    generator.cpu()
    reader = frozen_copy(judge, device)
    predictions = predict_proba(reader, images, device).argmax(axis=1).reshape(classes, n)
    recognition = recognition_rates(predictions)
    trigger = None
    if backdoor_target is not None and trigger_size is not None:
        trigger = trigger_report(
            images, labels, backdoor_target, trigger_size, cfg.thresholds.trigger_max_difference
        )
    forgotten = sorted(set(int(c) for c in forgotten_classes))
    verdict, reasons = decide(recognition, forgotten, cfg.thresholds, trigger)
    return SkyeyeResult(
        verdict=verdict,
        recognition=recognition,
        forgotten_classes=forgotten,
        thresholds=cfg.thresholds,
        judge=judge_name,
        seconds=seconds + time.perf_counter() - started,
        trigger=trigger,
        reasons=reasons,
        samples=images.reshape(classes, n, *images.shape[1:]),
        predictions=predictions,
        generator=generator,
        steps=steps,
        train_metrics=dict(train_metrics or {}),
        config=cfg,
    )


def skyeye_verify(
    classifier: nn.Module,
    real: ArrayDataset,
    judge: nn.Module,
    *,
    num_classes: int,
    forgotten_classes: Sequence[int] = (),
    judge_name: str = DEFAULT_JUDGE,
    backdoor_target: int | None = None,
    trigger_size: int | None = None,
    config: SkyeyeConfig | None = None,
    progress: ProgressFn | None = None,
) -> SkyeyeResult:
    """Verify that ``classifier`` forgot: Algorithm 2 then the measurable Algorithm 3.

    Parameters
    ----------
    classifier : nn.Module
        C_u, the (unlearned) model under verification; unchanged.
    real : ArrayDataset
        The user's local images (see the module docstring for which).
    judge : nn.Module
        Independent classifier that reads the drawings; unchanged.
    num_classes : int
        Number of classes.
    forgotten_classes : sequence of int
        Classes deleted (class deletion); empty for a backdoor deletion.
    judge_name : str
        Description of the judge for ``skyeye.json``.
    backdoor_target, trigger_size : int, optional
        Both given for a backdoor deletion.
    config : SkyeyeConfig, optional
        Settings; defaults when ``None``.
    progress : callable, optional
        ``progress(phase, step, total, metrics)`` during training.

    Returns
    -------
    SkyeyeResult
        Verdict, recognition, drawings and the trained generator.
    """
    cfg = config or SkyeyeConfig()
    bad = [c for c in forgotten_classes if not 0 <= int(c) < num_classes]
    if bad:
        raise ValueError(f"forgotten class {bad[0]} is out of range [0, {num_classes - 1}]")
    if backdoor_target is not None and not 0 <= backdoor_target < num_classes:
        raise ValueError(f"backdoor target {backdoor_target} is out of range")
    if not forgotten_classes and backdoor_target is None:
        raise ValueError("nothing to verify: give forgotten classes or a backdoor target")
    trained = train_generator(classifier, real, num_classes, cfg, progress)
    return judge_generator(
        trained.generator,
        judge,
        forgotten_classes=forgotten_classes,
        judge_name=judge_name,
        backdoor_target=backdoor_target,
        trigger_size=trigger_size,
        config=cfg,
        steps=trained.steps,
        train_metrics=trained.metrics,
        seconds=trained.seconds,
    )


# --------------------------------------------------------------------------------------
# Pictures and files
# --------------------------------------------------------------------------------------


def _figure(rows: int, cols: int, cell: float = 0.75):
    """An Agg figure with a ``rows`` x ``cols`` grid of axes (object API, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(cell * cols + 0.9, cell * rows + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def plot_grid(result: SkyeyeResult, path: Path | str, samples: int | None = None) -> Path:
    """Save the grid of drawings: one row per class, ``samples`` columns.

    Rows are labelled with the class and its recognition; a drawing the judge reads as another
    class gets a red frame.
    """
    count = min(samples or result.config.grid_samples, result.samples.shape[1])
    classes = result.samples.shape[0]
    fig, axes = _figure(classes, count)
    for c in range(classes):
        for k in range(count):
            ax = axes[c][k]
            ax.imshow(as_image(result.samples[c, k]), cmap="gray", vmin=0.0, vmax=1.0)
            if result.predictions[c, k] != c:
                for spine in ax.spines.values():
                    spine.set_color("red")
                    spine.set_linewidth(1.5)
        mark = " (forgotten)" if c in result.forgotten_classes else ""
        axes[c][0].set_ylabel(f"{c}: {result.recognition[c]:.0%}{mark}", fontsize=7)
    fig.suptitle(f"Skyeye: {result.verdict.replace('_', ' ')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def plot_before_after(
    before: ConditionalGenerator,
    after: ConditionalGenerator,
    real: ArrayDataset,
    classes: Sequence[int],
    path: Path | str,
    samples: int = 1,
    seed: int = 0,
) -> Path:
    """Fig. 11: per class, real image(s), the generator before unlearning, the one after.

    Parameters
    ----------
    before, after : ConditionalGenerator
        Generators trained with the model before and after unlearning (same shape, classes).
    real : ArrayDataset
        Real images with labels; the first ``samples`` of each class are shown (a blank cell
        when it holds none).
    classes : sequence of int
        The rows, typically the forgotten classes.
    path : Path or str
        Where to save the PNG.
    samples : int
        Images per panel (the paper shows one).
    seed : int
        Seed of the noise; both generators receive the same ``z``.
    """
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("plot_before_after needs at least one class")
    fig, axes = _figure(len(classes), 3 * samples, cell=0.9)
    for row, c in enumerate(classes):
        labels = np.full(samples, c)
        panels = (
            real.x[np.flatnonzero(real.y == c)[:samples]],
            generate(before, labels, seed + c),
            generate(after, labels, seed + c),
        )
        for p, images in enumerate(panels):
            for k in range(samples):
                ax = axes[row][p * samples + k]
                if k < len(images):
                    ax.imshow(as_image(images[k]), cmap="gray", vmin=0.0, vmax=1.0)
                else:
                    ax.set_facecolor("lightgrey")
        axes[row][0].set_ylabel(f"class {c}", fontsize=8)
    for p, title in enumerate(("real", "before unlearning", "after unlearning")):
        axes[0][p * samples].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def write_skyeye(
    result: SkyeyeResult,
    out_dir: Path | str,
    *,
    before: ConditionalGenerator | None = None,
    real: ArrayDataset | None = None,
) -> dict[str, Path]:
    """Write ``skyeye.json``, the grid PNG and, given ``before`` and ``real``, Fig. 11's PNG.

    Parameters
    ----------
    result : SkyeyeResult
        The verification to write.
    out_dir : Path or str
        Folder (created if needed).
    before : ConditionalGenerator, optional
        Generator trained with the model before unlearning, for the comparison.
    real : ArrayDataset, optional
        Real labelled images for the comparison's first column.

    Returns
    -------
    dict of str to Path
        ``{"json": ..., "grid": ..., "comparison": ...}`` for the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / SKYEYE_JSON_FILE}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    paths["grid"] = plot_grid(result, out / SKYEYE_GRID_FILE)
    rows = result.forgotten_classes or (
        [result.trigger["target"]] if result.trigger is not None else []
    )
    if before is not None and real is not None and rows:
        paths["comparison"] = plot_before_after(
            before,
            result.generator,
            real,
            rows,
            out / SKYEYE_COMPARISON_FILE,
            seed=result.config.seed,
        )
    return paths


# --------------------------------------------------------------------------------------
# The verifier (extension point)
# --------------------------------------------------------------------------------------


class SkyeyeSettings(SkyeyeConfig):
    """:class:`SkyeyeConfig` plus ``control``.

    Attributes
    ----------
    control : bool
        Also train a GAN with the model *before* unlearning (the reference) as C_u: its
        recognition (``before_recognition``) shows that the GAN can draw the forgotten class
        when the model knows it, and its generator draws the "before" column of Fig. 11.
        Doubles the time.
    """

    control: bool = True


@register_verifier
class SkyeyeVerifier(Verifier):
    """Skyeye (paper 000, section IV.B), judged by the model from before the unlearning."""

    name = "skyeye"
    summary = "conditional GAN draws what the model still knows; a judge reads it (paper 000)"
    Settings = SkyeyeSettings

    def check(self, task: VerificationTask) -> None:
        """Skyeye verifies class and backdoor deletions, from at least two local images."""
        if not task.forgotten_classes and task.backdoor_target is None:
            raise ValueError(
                "skyeye verifies class and backdoor deletions: give the forgotten classes "
                "or the backdoor target"
            )
        if len(task.local_data) < 2:
            raise ValueError("skyeye needs at least two of the user's own images")

    def verify(self, task: VerificationTask, progress: ProgressFn | None = None) -> SkyeyeResult:
        """Train the GAN with the verified model (and, with ``control``, the reference)."""
        self.check(task)
        config = SkyeyeConfig(**self.settings.model_dump(exclude={"control"}))
        kwargs: dict[str, Any] = {
            "num_classes": task.num_classes,
            "forgotten_classes": task.forgotten_classes,
            "judge_name": task.reference_name,
            "backdoor_target": task.backdoor_target,
            "trigger_size": task.trigger_size,
            "config": config,
        }
        result = skyeye_verify(
            task.model, task.local_data, task.reference, progress=progress, **kwargs
        )
        if not self.settings.control:
            return result
        relabelled = None
        if progress is not None:

            def relabelled(phase: str, step: int, total: int, metrics: dict[str, float]) -> None:
                progress(f"{phase}-before", step, total, metrics)

        control = skyeye_verify(
            task.reference, task.local_data, task.reference, progress=relabelled, **kwargs
        )
        has_forget = task.forget is not None and len(task.forget) > 0
        return replace(
            result,
            before=control.generator,
            before_recognition=control.recognition,
            real=task.forget if has_forget else task.local_data,
            seconds=result.seconds + control.seconds,
        )
