"""Distillation unlearning with an incompetent teacher (paper 000, IV.A and IV.C).

Choices where the paper is open (also in docs/methods.md):

- Algorithm 1 line 25 updates the teacher; the text trains the student, and so do we.
- The incompetent teacher is the federation's initial model w_0 (Algorithm 1 line 21).
- Each loss term is a batch mean, not the paper's sum over D_f (Eq. 5, 9, 12), so the mu
  weights keep their meaning for any |D_f| and batch size.
- "Learning rate decay 5e-3" (Table IV) is read as the unlearning learning rate, decayed by
  ``lr_decay`` after every epoch.
- The regulariser ``||w - w_o||^2`` (IV.C.2) pulls toward the *pre-unlearning* weights
  w_o = w_t and, by default, is averaged over parameters (``reg_reduction = "mean"``).
- L_AMA uses every feature layer the model names (LeNet-5: both conv blocks).
- ``stop_accuracy``: after each epoch, stop once D_f accuracy (on a seeded sample of at most
  ``PRUNE_SAMPLES``) is at most this; the paper fixes no epoch count and every further epoch
  costs clean accuracy. No epoch runs when the pruning below already took D_f there: the
  backdoor is gone, and an epoch would only cost clean accuracy that the relay must then buy
  back (docs/methods.md, "distill"). In class mode (outputs reset, no pruning) at least one
  epoch runs.

Our additions for durable forgetting (each can be switched off):

``reset_class_outputs`` (class mode): the forgotten classes' rows of the head are reset to the
incompetent teacher's before distilling. Distillation alone took class 3 to 0 %, but three
FedAvg rounds without any 3 brought it back to 37 %: restoring the features restores the score
of the untouched output unit. A reset unit only ever receives negative gradients afterwards
(no client holds the class), as in a model retrained without it.

``prune_mads`` (sample-level deletions, i.e. when no class output was reset; ``None`` = off):
the distillation alone drives the backdoor to 0 %, but it resurfaces (64 % after one relay
hop, 54 % three FedAvg rounds later, docs/results.md): clean training restores the weights the
distillation moved, and the trigger's pathway, which clean data never activates, is left
intact. Before distilling we therefore zero the input columns of one linear layer (by default
the first, LeNet-5's ``fc1``, whose inputs are the flattened conv features, one per channel and
position) that carry outlying evidence for D_f's labels: unit j scores
``mean over D_f of a_j * dz_y/da_j`` (activation times gradient of the label's logit); the top
unit is zeroed and the scores recomputed while its score exceeds the median + ``prune_mads``
median absolute deviations of the first scores (at most ``prune_max`` units; none when the
model does not fit D_f, accuracy <= ``stop_accuracy``), scored on at most ``PRUNE_SAMPLES``
samples of D_f. This uses D_f only, as the paper's server does; it is close in spirit to
fine-pruning (Liu et al., 2018).

Deletion-aware target (``natural_target = "validation"``, random and client deletions, when
the request carries the server's declared validation set): natural data deleted from a
federation is, after retraining, *unseen data of the same distribution*, not data the model
cannot classify (retraining keeps ~98.8 % on a random MNIST D_f). Pushing it to the incompetent
teacher's uniform output overshoots that target and drags the clean accuracy with it; and any
loss that lowers D_f's confidence through weights shared with everything else lowers the
retained data's confidence with it, so that a membership attack (which compares D_f with the
members and non-members of the *same* model) still finds D_f among the members (measured in
docs/methods-quality.md, section 3). In this mode:

- the target is a *logit margin* per sample, ``m = z_y - logsumexp_{j != y} z_j`` (= LiRA's
  ``log p_y - log(1 - p_y)``), which, unlike the cross-entropy, does not saturate on the
  samples a model has memorised: under the model before unlearning, D_f's samples of class
  c are ranked by margin and sample i of rank r (of m) gets ``t_i`` = the ``(r + 0.5) / m``
  quantile of the validation set's margins of class c (:func:`unseen_margins`), the least
  movement that gives D_f the margins of unseen data;
- the loss keeps the shape of Eq. 12, a hinge at a bound, on the margin scale:
  ``(mu_D + mu_AMA + mu_H) mean_i relu(m_i - t_i)`` (samples already at or below their
  target are left alone; the hinge takes the weight of the three forgetting terms), plus the
  paper's regulariser ``lambda ||w - w_o||^2``, plus a function-space anchor
  ``natural_keep * mean_v (m_v - m_v^o)^2`` on ``natural_keep_samples`` validation samples
  per step (``m^o``: margins before unlearning): the anchor makes the optimiser lower D_f's
  margins along directions that leave unseen data alone, i.e. remove what is specific to D_f.
  The incompetent teacher's distillation and attention terms are off: their target is the
  wrong one for natural data;
- the stopping rule is checked after every step (constant learning rate ``natural_lr``, at most
  ``natural_max_steps`` steps whatever |D_f|): stop once the mean excess ``relu(m_i - t_i)``
  over at most ``natural_check_samples`` of D_f's samples is at most ``natural_tolerance``
  (logits); nothing runs (no pruning either) when it is to begin with.

Annotation errors (``mislabeled``: the mode's ``wrong_labels``) take the same path with
another reference: retrained without them, a model sees each sample as an unseen image of its
true class, so the target of a sample labelled ``c`` is ranked among the margins *for c* of
the validation samples of other classes (:func:`wrong_label_margins`); the margins of class
``c``'s own samples would keep the memorised wrong labels.

Backdoor and class deletions are unchanged (their D_f is *not* like unseen data: retraining
does not predict the trigger's label or the forgotten class).

The hyperparameters are :class:`DistillSettings` (``methods.options.distill``): a zero
``mu_*`` drops a loss term, ``bound=None`` uses the unbounded hard loss of Eq. 9,
``lr_decay=None`` keeps the learning rate constant, ``reg_weight=0`` drops the regulariser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import ConfigDict, Field
from torch import nn
from torch.nn import functional as F

from fedforget.config import MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_SAMPLES
from fedforget.models import ClassifierModel, classifier_head, logits_and_features
from fedforget.training import load_numpy_state, seeded_batches, to_tensors
from fedforget.unlearning.base import (
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    batch_accuracy,
    register_unlearner,
)
from fedforget.unlearning.losses import (
    attention_loss,
    distillation_loss,
    hard_loss,
    weight_regulariser,
)

PRUNE_SAMPLES = 1024
"""D_f samples that the attribution scores and the stopping rule's accuracy are measured on:
both are means over D_f, which a seeded sample estimates within a fraction of a point, and
scoring all of a large D_f after every epoch cost a quarter of the unlearning step."""


class DistillSettings(UnlearnerSettings):
    """Distillation unlearning of paper 000 (section IV.A, IV.C, Eq. 2-9, 12).

    Defaults follow the paper: mu = 0.33 each, q = 2, BND = 15, unlearning learning rate
    5e-3 (Table IV), regulariser weight 0.4 (Table IV). ``reg_reduction = "mean"`` divides
    ``||w - w_o||^2`` by the number of parameters. ``prune_mads`` is our addition for durable
    forgetting (see the module's docstring and docs/methods.md). Given as every method's
    options are: ``methods.options.distill`` (``--option distill.epochs=3``, or the
    command line's ``--unlearn-epochs`` and its siblings).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(
        5, ge=1, le=MAX_EPOCHS, description="Distillation epochs over D_f (at most 1,000)."
    )
    batch_size: int = Field(100, ge=1, le=MAX_BATCH, description="Distillation batch size.")
    lr: float = Field(5e-3, gt=0, le=MAX_LR, description="Distillation learning rate.")
    lr_decay: float | None = Field(0.7, gt=0, le=1, description="Per-epoch factor; None = off.")
    mu_distill: float = Field(0.33, ge=0, le=1e6, description="Weight of L_D (0 = off).")
    mu_attention: float = Field(0.33, ge=0, le=1e6, description="Weight of L_AMA (0 = off).")
    mu_hard: float = Field(0.33, ge=0, le=1e6, description="Weight of L_H.")
    temperature: float = Field(1.0, gt=0, le=1e6, description="Distillation temperature.")
    attention_q: float = Field(2.0, ge=1, le=64, description="Exponent q of the attention maps.")
    bound: float | None = Field(
        15.0, gt=0, le=1e6, description="BND of Eq. 12; None = unbounded Eq. 9."
    )
    reg_weight: float = Field(0.4, ge=0, le=1e6, description="Weight of ||w - w_o||^2.")
    reg_reduction: Literal["mean", "sum"] = Field(
        "mean", description="mean: ||w - w_o||^2 divided by the number of parameters | sum."
    )
    stop_accuracy: float | None = Field(0.01, ge=0, le=1, description="Stop once D_f acc <=.")
    prune_mads: float | None = Field(
        5.0,
        gt=0,
        le=1e6,
        description="Prune outlying D_f units first (our addition); None = off.",
    )
    prune_max: int = Field(32, ge=1, le=1_000_000, description="Most units pruned.")
    prune_layer: str | None = Field(None, description="Layer to prune; None = the model's own.")
    reset_class_outputs: bool = Field(
        True, description="Class mode: reset the forgotten classes' head rows to the teacher's."
    )

    natural_target: Literal["validation", "teacher"] = Field(
        "validation",
        description=(
            "Random and client deletions with a declared validation set: lower each D_f"
            " sample's logit margin to a class-matched margin of unseen data while the"
            " validation set's margins are held; 'teacher' = as for backdoor."
        ),
    )
    natural_keep: float = Field(
        0.1,
        ge=0,
        le=1e6,
        description="Weight of the validation anchor: mean squared change of the validation"
        " samples' margins (natural deletions).",
    )
    natural_keep_samples: int = Field(
        50, ge=1, le=MAX_SAMPLES, description="Validation samples the anchor draws per step."
    )
    natural_lr: float = Field(
        0.01, gt=0, le=MAX_LR, description="Constant learning rate of the natural-deletion target."
    )
    natural_tolerance: float = Field(
        0.1,
        ge=0,
        le=1e6,
        description="Natural deletions stop once D_f's mean margin excess over its targets"
        " (logits) is at most this.",
    )
    natural_max_steps: int = Field(
        400,
        ge=1,
        le=1_000_000,
        description="Step cap of the natural-deletion target (checked every step).",
    )
    natural_check_samples: int = Field(
        512,
        ge=1,
        le=MAX_SAMPLES,
        description="D_f samples scored after every step for the natural stop.",
    )


DistillConfig = DistillSettings
"""The former name, for code that imported it from here."""


@register_unlearner
class DistillationUnlearner(Unlearner):
    """Paper 000's unlearning: L = mu_D L_D + mu_AMA L_AMA + mu_H L_H + lambda ||w - w_o||^2.

    Needs D_f only; the student is the current global model, the teacher the initial one.
    """

    name = "distill"
    uses_relay = True
    Settings = DistillSettings
    settings: DistillSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Train ``model`` (the student) on D_f against the incompetent teacher."""
        cfg = self.settings
        device = context.device
        student = model.to(device).train()
        x, y = to_tensors(request.forget, device)
        if self._natural(request):
            return self._unlearn_natural(student, x, y, request, context)
        teacher = load_numpy_state(context.build_model(), context.initial_state).to(device).eval()
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(context.seed))
        sample = keep[:PRUNE_SAMPLES]
        if cfg.reset_class_outputs and request.forget_classes:
            reset_outputs(student, teacher, request.forget_classes)
        elif cfg.prune_mads is not None:
            pruned = prune_forget_units(
                student,
                x[sample],
                y[sample],
                cfg.prune_mads,
                cfg.prune_max,
                cfg.prune_layer,
                cfg.stop_accuracy,
            )
            context.report("pruning", 1, 1, units=float(len(pruned)))
            if pruned and self._stops_at(batch_accuracy(student, x[sample], y[sample])):
                return student.eval()
        anchor = [p.detach().clone() for p in student.parameters()]
        optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(context.seed)
        for epoch in range(cfg.epochs):
            optimizer.param_groups[0]["lr"] = cfg.lr * (cfg.lr_decay or 1.0) ** epoch
            totals = self._run_epoch(student, teacher, anchor, x, y, optimizer, generator)
            totals["forget_accuracy"] = batch_accuracy(student, x[sample], y[sample])
            context.report("unlearning", epoch + 1, cfg.epochs, **totals)
            if self._stops_at(totals["forget_accuracy"]):
                break
        return student.eval()

    def _stops_at(self, forget_accuracy: float) -> bool:
        """Whether D_f's accuracy is at most ``stop_accuracy``: no (further) epoch need run."""
        stop = self.settings.stop_accuracy
        return stop is not None and forget_accuracy <= stop

    def _natural(self, request: UnlearningRequest) -> bool:
        return (
            self.settings.natural_target == "validation"
            and request.mode.natural
            and request.validation is not None
            and len(request.validation) > 0
        )

    def _unlearn_natural(
        self,
        student: ClassifierModel,
        x: torch.Tensor,
        y: torch.Tensor,
        request: UnlearningRequest,
        context: UnlearningContext,
    ) -> ClassifierModel:
        """Lower D_f's margins to unseen data's, holding the validation set (module docstring)."""
        cfg = self.settings
        vx, vy = to_tensors(request.validation, context.device)
        held = logit_margins(student, vx, vy)
        margins = logit_margins(student, x, y)
        if request.mode.wrong_labels:
            targets = wrong_label_margins(student, margins, y, vx, vy)
        else:
            targets = unseen_margins(margins, y, held, vy)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(context.seed))
        check = order[: cfg.natural_check_samples]
        excess = _excess(student, x[check], y[check], targets[check])
        context.report("unlearning", 0, cfg.natural_max_steps, excess=excess)
        if excess <= cfg.natural_tolerance:
            return student.eval()
        anchor = [p.detach().clone() for p in student.parameters()]
        optimizer = torch.optim.SGD(student.parameters(), lr=cfg.natural_lr)
        generator = torch.Generator().manual_seed(context.seed)
        steps = cfg.natural_max_steps
        for step, batch in enumerate(_endless(len(x), cfg.batch_size, generator), start=1):
            kept = torch.randint(len(vx), (cfg.natural_keep_samples,), generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss = self.natural_loss(
                student,
                anchor,
                (x[batch], y[batch], targets[batch]),
                (vx[kept], vy[kept], held[kept]),
            )
            loss.backward()
            optimizer.step()
            excess = _excess(student, x[check], y[check], targets[check])
            if excess <= cfg.natural_tolerance or step >= steps:
                context.report("unlearning", step, steps, excess=excess)
                break
        return student.eval()

    def natural_loss(
        self,
        student: ClassifierModel,
        anchor: list[torch.Tensor],
        forget: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        keep: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Eq. 12's hinge on the margin scale + the validation anchor + the regulariser.

        ``forget`` and ``keep`` are ``(x, y, margin)`` triples: D_f's samples with their
        target margins, validation samples with their margins before unlearning.
        """
        cfg = self.settings
        fx, fy, targets = forget
        kx, ky, held = keep
        # the teacher's terms are off: the hinge takes the weight of all three forgetting terms
        forgetting = cfg.mu_hard + cfg.mu_distill + cfg.mu_attention
        if not cfg.natural_keep:
            kx, ky, held = kx[:0], ky[:0], held[:0]
        margins = logit_margin(student(torch.cat([fx, kx])), torch.cat([fy, ky]))  # one pass
        total = forgetting * F.relu(margins[: len(fx)] - targets).mean()
        if cfg.natural_keep:
            moved = margins[len(fx) :] - held
            total = total + cfg.natural_keep * moved.pow(2).mean()
        if cfg.reg_weight:
            total = total + cfg.reg_weight * weight_regulariser(student, anchor, cfg.reg_reduction)
        return total

    def _run_epoch(
        self,
        student: ClassifierModel,
        teacher: ClassifierModel,
        anchor: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> dict[str, float]:
        sums = {"loss": 0.0, "hard": 0.0}
        batches = 0
        for batch in seeded_batches(len(x), self.settings.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss, hard = self.loss(student, teacher, anchor, x[batch], y[batch])
            loss.backward()
            optimizer.step()
            sums["loss"] += float(loss.detach())
            sums["hard"] += float(hard.detach())
            batches += 1
        return {key: value / max(batches, 1) for key, value in sums.items()}

    def loss(
        self,
        student: ClassifierModel,
        teacher: ClassifierModel,
        anchor: list[torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The total unlearning loss on one batch and its hard-loss term."""
        cfg = self.settings
        student_logits, student_maps = logits_and_features(student, x)
        with torch.no_grad():
            teacher_logits, teacher_maps = logits_and_features(teacher, x)
        hard = hard_loss(student_logits, y, cfg.bound)
        total = cfg.mu_hard * hard
        if cfg.mu_distill:
            total = total + cfg.mu_distill * distillation_loss(
                teacher_logits, student_logits, cfg.temperature
            )
        if cfg.mu_attention and student_maps:
            total = total + cfg.mu_attention * attention_loss(
                teacher_maps.values(), student_maps.values(), cfg.attention_q
            )
        if cfg.reg_weight:
            total = total + cfg.reg_weight * weight_regulariser(student, anchor, cfg.reg_reduction)
        return total, hard


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - logsumexp_{j != y} z_j`` per row: ``log p_y - log(1 - p_y)`` without saturation."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


@torch.no_grad()
def logit_margins(model: ClassifierModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logit margins of ``model`` (in eval mode) on ``(x, y)``, in chunks."""
    was_training = model.training
    model.eval()
    margins = torch.cat(
        [logit_margin(model(x[i : i + 1000]), y[i : i + 1000]) for i in range(0, len(x), 1000)]
    )
    model.train(was_training)
    return margins


def _excess(model: ClassifierModel, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor):
    """Mean margin excess ``relu(m_i - t_i)`` of D_f over its targets (the stopping rule)."""
    return float(F.relu(logit_margins(model, x, y) - targets).mean())


def unseen_margins(
    margins: torch.Tensor,
    y: torch.Tensor,
    val_margins: torch.Tensor,
    vy: torch.Tensor,
) -> torch.Tensor:
    """Per-sample target margins for D_f (current ``margins``, labels ``y``), from the
    validation set's margins ``val_margins`` (labels ``vy``) under the same model.

    Within each class, D_f's samples are ranked by their current margin and the sample of
    rank ``r`` (of ``m``) gets the ``(r + 0.5) / m`` quantile of the validation set's margins
    of that class: the least movement (a 1-D transport) that gives D_f the margin
    distribution of unseen data. Its easiest samples keep high targets, its hardest get the
    (negative) margins of unseen samples the model gets wrong. A class the validation set
    lacks uses all its samples.
    """
    targets = torch.empty_like(margins)
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        of_class = vy == label
        reference = val_margins[of_class] if bool(of_class.any()) else val_margins
        targets[members] = _rank_matched(margins[members], reference)
    return targets


@torch.no_grad()
def wrong_label_margins(
    model: ClassifierModel,
    margins: torch.Tensor,
    y: torch.Tensor,
    vx: torch.Tensor,
    vy: torch.Tensor,
) -> torch.Tensor:
    """Per-sample target margins for a D_f whose labels ``y`` are wrong (annotation errors).

    Retrained without D_f, a model sees each sample as an unseen image of its *true* class,
    so the margin it gives the wrong label ``c`` is that of an unseen sample of another
    class for ``c``: the reference of label ``c`` is the margins for ``c`` of the validation
    samples whose label is not ``c`` (:func:`unseen_margins`' own reference, the margins of
    class ``c``'s samples, would keep the memorised wrong labels). Ranks are matched as
    there.
    """
    targets = torch.empty_like(margins)
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        others = vx[vy != label]
        if len(others) == 0:
            others = vx
        wrong = torch.full((len(others),), int(label), dtype=vy.dtype, device=vy.device)
        reference = logit_margins(model, others, wrong)
        targets[members] = _rank_matched(margins[members], reference)
    return targets


def _rank_matched(margins: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The ``(r + 0.5) / m`` quantile of ``reference`` for the sample of rank ``r`` of ``m``."""
    ranks = torch.argsort(torch.argsort(margins))
    levels = (ranks.double() + 0.5) / len(margins)
    return torch.quantile(reference.double(), levels).to(margins.dtype)


@torch.no_grad()
def reset_outputs(student: ClassifierModel, teacher: ClassifierModel, classes: tuple[int, ...]):
    """Give the forgotten classes' output units the incompetent teacher's weights."""
    rows = list(classes)
    head, teacher_head = classifier_head(student), classifier_head(teacher)
    for name, param in head.named_parameters():
        param[rows] = teacher_head.get_parameter(name)[rows]


def _endless(n: int, batch_size: int, generator: torch.Generator):
    """Seeded mini-batches of ``range(n)``, a fresh permutation per pass, without end."""
    while True:
        yield from seeded_batches(n, batch_size, generator)


def _linear_layer(model: nn.Module, name: str | None) -> nn.Linear:
    """The linear layer called ``name``, or the model's first linear layer."""
    if name is not None:
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{name!r} is not a linear layer")
        return layer
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return module
    raise ValueError("the model has no linear layer to prune")


def prune_forget_units(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mads: float,
    max_units: int,
    layer_name: str | None = None,
    stop_accuracy: float | None = None,
) -> list[int]:
    """Zero the inputs of one linear layer that stand out as carriers of D_f's labels.

    Each input unit j of the layer scores ``mean over D_f of a_j * dz_y/da_j`` (its attribution
    to the logit of the sample's label). The highest-scoring unit's weight column is zeroed and
    the scores are recomputed, while the top score is an outlier: above the median of the
    first scores plus ``mads`` median absolute deviations; at most ``max_units`` units, and
    none at all when the accuracy on D_f is already at most ``stop_accuracy`` (when given).
    Returns the zeroed unit indices.
    """
    layer = _linear_layer(model, layer_name)
    was_training = model.training
    model.eval()
    pruned: list[int] = []
    captured: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda _m, inputs, _o: captured.__setitem__("a", inputs[0]))
    try:
        with torch.no_grad():  # the stop check and the shortcut's reference: no graph needed
            logits = model(x)
        if stop_accuracy is not None and (
            float((logits.argmax(dim=1) == y).float().mean()) <= stop_accuracy
        ):
            return pruned  # nothing to forget: the model does not fit D_f
        scored = _attribution_pass(model, layer, x, captured, logits)
        threshold = None
        while len(pruned) < max_units:
            logits, inputs = scored()
            (grad,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), inputs)
            scores = (inputs * grad).detach().mean(dim=0).flatten()
            if threshold is None:
                median = scores.median()
                threshold = float(median + mads * (scores - median).abs().median())
            if pruned:
                scores[pruned] = -float("inf")
            unit = int(scores.argmax())
            if float(scores[unit]) <= max(threshold, 0.0):
                break
            with torch.no_grad():
                layer.weight[:, unit] = 0.0
            pruned.append(unit)
    finally:
        hook.remove()
        model.train(was_training)
    return pruned


def _attribution_pass(
    model: nn.Module,
    layer: nn.Linear,
    x: torch.Tensor,
    captured: dict[str, torch.Tensor],
    logits: torch.Tensor,
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A function returning ``(logits, layer inputs)`` with the inputs in the autograd graph.

    Zeroing the layer's weight columns leaves its inputs unchanged, so the pruning loop need
    not rerun what comes before the layer (LeNet-5's conv stack: 90 % of the pass): the inputs
    of the first full pass are fed to the layer through a pre-hook while the rest of the model
    runs on a single image. That shortcut is used only if it reproduces the full pass's
    logits (a model whose later layers read the image directly, e.g. through a skip around the
    layer, would not): otherwise every call runs the whole model.
    """
    inputs = captured["a"].detach()

    def shortcut() -> tuple[torch.Tensor, torch.Tensor]:
        leaf = inputs.clone().requires_grad_(True)
        handle = layer.register_forward_pre_hook(lambda _m, _inputs: (leaf,))
        try:
            return model(x[:1]), leaf
        finally:
            handle.remove()

    def full() -> tuple[torch.Tensor, torch.Tensor]:
        return model(x), captured["a"]

    try:
        with torch.no_grad():
            replayed, _ = shortcut()
    except RuntimeError:  # shapes the later layers cannot take
        return full
    same = replayed.shape == logits.shape and torch.allclose(replayed, logits, rtol=1e-4, atol=1e-5)
    return shortcut if same else full
