"""Gradient ascent on D_f, the ``NG`` (negative gradient) baseline.

Paper 004 (section "Baselines", item 3, after Golatkar, Achille and Soatto 2020): "We fine-tune
the Original with D_f by following the direction of gradient ascent"; the same baseline is
Thudi et al. 2022 ("unlearning by gradient ascent") and Jang et al. 2023 (negating the
training loss). The update is plain SGD on ``-CE(f_w(x), y)`` over D_f:
``w <- w + eta * grad_w CE(f_w(x), y)``. Needs D_f only (``forget``); no retained data, no
client training.

Gradient ascent on cross-entropy is unbounded: once a sample is misclassified its loss, and
with it the gradient, keeps growing, and paper 004 notes NG's "unstable variability in the
loss". On MNIST plain ascent barely moves for a few hundred steps and then collapses within a
few steps (test accuracy 10 %), or turns to NaN at a larger lr. The papers fix no guard; ours
(each can be switched off or tuned):

- plain SGD (no momentum, which would carry the ascent past the stopping point), lr 0.03;
- ``max_grad_norm``: every step's gradient is clipped to L2 norm 1, so that the runaway phase
  proceeds in bounded steps and the stopping rule can catch it;
- early stop: every ``check_every`` (2) steps the accuracy on a fixed seeded sample of D_f
  (``eval_samples`` = 512) is measured, and the ascent stops as soon as it is at most
  ``stop_accuracy`` = 1 %, near the level of a model that never saw D_f (MNIST retrain: 0.2 %
  backdoor success, 0 % on a forgotten class); ``epochs`` (100) is only a cap;
- ``only_fitted`` (default on): the same stopping rule applied per sample, i.e. a sample stops
  contributing once the model no longer predicts its label (its CE enters the batch mean as 0),
  so the loss of already forgotten samples is not driven towards infinity (the role of paper
  000's bound BND in Eq. 12). The objective is unchanged while a sample is still fitted.

Why these guards and defaults: ``only_fitted`` reaches the same forgetting at a much smaller
cost in clean accuracy than whole-batch ascent; stopping later than 1 % leaves more of D_f; the
learning rate only sets the number of steps to the same end point, and 0.03 (not 0.01) lets a
confident model leave the flat phase within the epoch cap. The runs: ``docs/results.md``,
"gradient-ascent".
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from fedforget.models import ClassifierModel
from fedforget.training import seeded_batches, to_tensors, train_epoch
from fedforget.unlearning.base import (
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    batch_accuracy,
    register_unlearner,
)


class GradientAscentSettings(UnlearnerSettings):
    """Options of :class:`GradientAscentUnlearner`.

    Attributes
    ----------
    epochs : int
        Most passes over D_f (a cap: the stopping rule normally ends the ascent first).
    lr : float
        SGD learning rate of the ascent (no momentum).
    batch_size : int
        Mini-batch size on D_f.
    max_grad_norm : float | None
        Clip each step's gradient to this L2 norm (``None`` = no clipping).
    stop_accuracy : float
        Stop once the accuracy on D_f's evaluation sample is at most this.
    check_every : int
        Steps between two checks of the stopping rule.
    eval_samples : int
        Size of the fixed seeded sample of D_f the stopping rule is evaluated on.
    only_fitted : bool
        Ascend only on samples the model still assigns their label (per-sample stop).
    """

    epochs: int = Field(100, ge=1)
    lr: float = Field(0.03, gt=0)
    batch_size: int = Field(64, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    stop_accuracy: float = Field(0.01, ge=0, le=1)
    check_every: int = Field(2, ge=1)
    eval_samples: int = Field(512, ge=1)
    only_fitted: bool = True


@register_unlearner
class GradientAscentUnlearner(Unlearner):
    """Maximise the cross-entropy on D_f with SGD until D_f is no longer fitted (NG)."""

    name = "gradient-ascent"
    needs = frozenset({"forget"})
    Settings = GradientAscentSettings
    settings: GradientAscentSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Ascend the loss on D_f until the stopping rule holds or ``epochs`` have run."""
        cfg = self.settings
        model = model.to(context.device).train()
        x, y = to_tensors(request.forget, context.device)
        generator = torch.Generator().manual_seed(context.seed)
        probe = torch.randperm(len(x), generator=generator)[: cfg.eval_samples]
        ascent = _Ascent(model, cfg, x[probe], y[probe])
        done = ascent.forgotten()
        for epoch in range(cfg.epochs):
            if done:
                break
            loss, done = ascent.run_epoch(x, y, generator)
            context.report(
                "gradient ascent",
                epoch + 1,
                cfg.epochs,
                loss=loss,
                forget_accuracy=batch_accuracy(model, ascent.probe_x, ascent.probe_y),
                steps=float(ascent.steps),
            )
        return model.eval()


class _Ascent:
    """The state of one gradient ascent: model, optimizer, step count and the D_f probe."""

    def __init__(
        self,
        model: nn.Module,
        cfg: GradientAscentSettings,
        probe_x: torch.Tensor,
        probe_y: torch.Tensor,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.probe_x, self.probe_y = probe_x, probe_y
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        self.steps = 0

    def forgotten(self) -> bool:
        """Whether the probe's accuracy is at most the stop threshold."""
        return batch_accuracy(self.model, self.probe_x, self.probe_y) <= self.cfg.stop_accuracy

    def run_epoch(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, bool]:
        """One pass of ascent steps over D_f; returns the mean CE and whether to stop."""
        done = train_epoch(
            self.optimizer,
            seeded_batches(len(x), self.cfg.batch_size, generator),
            lambda batch: self.objective(x[batch], y[batch]),
            max_grad_norm=self.cfg.max_grad_norm,
            stop=self.counted_step_forgets,
        )
        return done.losses.get("loss", 0.0), done.stopped

    def objective(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``-CE`` to descend (gradient ascent on the CE), and the CE to report."""
        logits = self.model(x)
        losses = F.cross_entropy(logits, y, reduction="none")
        if self.cfg.only_fitted:
            losses = losses * (logits.argmax(dim=1) == y)
        loss = losses.mean()
        return -loss, {"loss": loss}

    def counted_step_forgets(self) -> bool:
        """Count a step; every ``check_every`` steps, whether D_f is forgotten (stop)."""
        self.steps += 1
        return self.steps % self.cfg.check_every == 0 and self.forgotten()
