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

from dataclasses import replace
from typing import Any

from fedforget.data.modes import Kind
from fedforget.verification.base import (
    ProgressFn,
    VerificationTask,
    Verifier,
    register_verifier,
)
from fedforget.verification.skyeye_config import (
    SKYEYE_COMPARISON_FILE,
    SKYEYE_GRID_FILE,
    SKYEYE_JSON_FILE,
    SkyeyeConfig,
    SkyeyeThresholds,
)
from fedforget.verification.skyeye_judge import (
    SkyeyeResult,
    decide,
    generate,
    judge_generator,
    recognition_rates,
    skyeye_verify,
    trigger_report,
)
from fedforget.verification.skyeye_report import plot_before_after, plot_grid, write_skyeye
from fedforget.verification.skyeye_training import (
    TrainedGenerator,
    discriminator_loss,
    generator_loss,
    train_generator,
)

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
    kinds = frozenset({Kind.BACKDOOR, Kind.CLASS})
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
