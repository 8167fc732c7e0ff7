"""Skyeye's decision: drawings read by a judge, the trigger report and the verdict (Algorithm 3)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fedforget.data import ArrayDataset
from fedforget.data.deletion import apply_trigger
from fedforget.training import predict_proba, resolve_device
from fedforget.verification.base import (
    ProgressFn,
    frozen_copy,
)
from fedforget.verification.networks import ConditionalGenerator
from fedforget.verification.skyeye_config import (
    BRIGHT,
    DEFAULT_JUDGE,
    FORGOTTEN,
    NOT_FORGOTTEN,
    SkyeyeConfig,
    SkyeyeThresholds,
    Verdict,
)
from fedforget.verification.skyeye_report import write_skyeye
from fedforget.verification.skyeye_training import generate, train_generator

# --------------------------------------------------------------------------------------
# Decision (Algorithm 3, made measurable)
# --------------------------------------------------------------------------------------


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
        A classifier independent of the verified model (which one: see
        :mod:`fedforget.verification.skyeye`); unchanged.
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
        The user's local images (which: see :mod:`fedforget.verification.skyeye`).
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
