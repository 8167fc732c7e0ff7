"""FedQUIT: on-device unlearning by distillation from a quasi-competent virtual teacher.

Mora et al., "FedQUIT: On-Device Federated Unlearning via a Quasi-Competent Virtual Teacher"
(2024). The deleting client unlearns alone, with nothing but the global model and its own
D_f (the ``forget`` need; it runs with ``--unlearn-on client``): it distils the global model
into itself on D_f, except that the teacher's output for the true class is lowered so that
the true class is no longer the teacher's answer. The teacher stays *quasi-competent*: its
ranking of the other classes (what the model knows about similar inputs) is the global
model's, so the student keeps that knowledge while the specific answer is removed; and the
loss is bounded (the student can match the teacher exactly), unlike gradient ascent.

Equations (our reading; the paper text is not in this repository). With the frozen global
model's logits z(x), label y, the virtual teacher's logits

    t_c(x) = z_c(x)                      for c != y
    t_y(x) = mean_{c != y} z_c(x)        ("mean", default)   or   min_{c != y} z_c(x) ("min")

and the student f_w, starting from the global model, minimises on D_f

    L = T^2 KL( softmax(t / T) || softmax(f_w(x) / T) ).

With "mean" the true class sits at the other classes' average logit: below the best other
class (unless all others are equal), so the teacher never answers y, yet y keeps some mass
instead of none; "min" makes y the teacher's least likely class.

Choices where our reading leaves room:

- ``epochs`` 5 passes over D_f (the paper's client runs the local epochs of its training),
  plain SGD lr 0.01, batch 32, temperature 1. No early stop is needed: the loss is minimised
  once the student matches the teacher, where D_f is already misclassified. No momentum: on
  digits (backdoor mode, seed 0) momentum 0.9 carried the student far past the teacher
  (test accuracy 0.87 -> 0.45), plain SGD kept 0.83 with the backdoor at 3 %.
- Every mode: the method needs only D_f and its labels (backdoor: the trigger's target label
  is lowered, so the student answers what the clean image shows). The paper's setting is a
  client leaving the federation; a sample deletion is the same step on a part of its data.
- The recovery rounds of the paper (FedAvg continues after the client's step) are not part
  of the deletion step here; ``fedforget compare --after-rounds`` measures them.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
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


class FedQuitSettings(UnlearnerSettings):
    """Options of :class:`FedQuitUnlearner`.

    Attributes
    ----------
    epochs : int
        Passes of distillation over D_f.
    lr, momentum : float
        SGD settings of the student.
    batch_size : int
        Mini-batch size on D_f.
    temperature : float
        Softmax temperature T of the distillation.
    true_logit : {"mean", "min"}
        The teacher's logit for the true class: the other classes' mean or minimum.
    """

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    true_logit: Literal["mean", "min"] = "mean"


@register_unlearner
class FedQuitUnlearner(Unlearner):
    """Distil the global model on D_f from a teacher whose true-class logit is lowered."""

    name = "fedquit"
    needs = frozenset({"forget"})
    Settings = FedQuitSettings
    settings: FedQuitSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """``epochs`` passes of KD from the virtual teacher on D_f."""
        cfg = self.settings
        model = model.to(context.device).train()
        teacher = copy.deepcopy(model).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        x, y = to_tensors(request.forget, context.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        generator = torch.Generator().manual_seed(context.seed)

        def distillation(batch: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = virtual_teacher_logits(teacher(x[batch]), y[batch], cfg.true_logit)
            return distillation_loss(model(x[batch]), target, cfg.temperature)

        for epoch in range(cfg.epochs):
            done = train_epoch(
                optimizer, seeded_batches(len(x), cfg.batch_size, generator), distillation
            )
            context.report(
                "virtual-teacher distillation",
                epoch + 1,
                cfg.epochs,
                loss=done.losses.get("loss", 0.0),
                forget_accuracy=batch_accuracy(model, x, y),
            )
        return model.eval()


def virtual_teacher_logits(
    logits: torch.Tensor, labels: torch.Tensor, true_logit: str = "mean"
) -> torch.Tensor:
    """The global model's logits with the true class's logit set to the others' mean or min."""
    others = torch.ones_like(logits, dtype=torch.bool)
    others[torch.arange(len(labels)), labels] = False
    other_logits = logits[others].view(len(labels), -1)
    if true_logit == "mean":
        lowered = other_logits.mean(dim=1)
    elif true_logit == "min":
        lowered = other_logits.min(dim=1).values
    else:
        raise ValueError(f"true_logit must be 'mean' or 'min', got {true_logit!r}")
    teacher = logits.clone()
    teacher[torch.arange(len(labels)), labels] = lowered
    return teacher


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 KL(softmax(t/T) || softmax(s/T))``, averaged over the batch."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2
