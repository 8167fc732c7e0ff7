"""Paper 002's impair-repair step (Algorithm 8, Eq. 12), shared by MuGAN and zMuGAN.

As paper 002 writes it: with ``M`` the model being unlearned
and ``M_ref`` a frozen copy of it taken before the first step,

    L = KL(M(x_f) || M_ref(z)) + CE(M(x_r), y_r),                                  (Eq. 12)

minimised in two passes with Adam (Alg. 8): **impair**, one pass over D_f in which the output
of ``M`` on every forget batch is pulled towards ``M_ref``'s output on random inputs ``z`` of
the same shape; then **repair**, one pass of cross-entropy fine-tuning on D_r.

Choices where the paper is vague:

- Random inputs: ``z ~ U[0, 1]`` per pixel (``random_inputs = "uniform"``), the value range of
  every image in fedforget, so ``z`` is an in-range, structureless image and ``M_ref(z)`` is
  the answer the trained model gives to "no content", which is what D_f should look like
  afterwards. ``"gaussian"`` (``N(0, 1)``, ``torch.randn`` like PyTorch's default generator)
  is available; on [0, 1] images half its pixels are out of range.
- KL direction: Algorithm 8 calls PyTorch's ``KLDivLoss(out, out_r)``, i.e. ``M``'s
  log-probabilities as input and ``M_ref(z)``'s probabilities as target, which is
  ``KL(M_ref(z) || M(x_f))``; we do exactly that, averaged per sample (``batchmean``).
- A fresh ``z`` for every batch, seeded.
- Epochs of each pass and the batch size are settings (the paper runs one pass each);
  :class:`ImpairRepairSettings` holds the defaults both methods share, tuned in
  :mod:`fedforget.unlearning.mugan` and :mod:`fedforget.unlearning.zmugan`.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from fedforget.models import ClassifierModel
from fedforget.training import seeded_batches, train_epoch
from fedforget.unlearning.base import UnlearnerSettings, UnlearningContext, batch_accuracy

RandomInputs = Literal["uniform", "gaussian"]


class ImpairRepairSettings(UnlearnerSettings):
    """Options of the impair-repair step (Alg. 8) shared by MuGAN and zMuGAN.

    Attributes
    ----------
    lr : float
        Adam learning rate of both passes (paper: 1e-4 for MuGAN).
    impair_epochs : int
        Passes over D_f pulling ``M(x_f)`` to ``M_ref(z)`` (paper: 1).
    repair_epochs : int
        Passes of cross-entropy over D_r (paper: 1).
    batch_size : int
        Mini-batch size of both passes.
    random_inputs : {"uniform", "gaussian"}
        Distribution of the random inputs ``z`` fed to the frozen reference.
    """

    lr: float = Field(1e-4, gt=0)
    impair_epochs: int = Field(1, ge=1)
    repair_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    random_inputs: RandomInputs = "uniform"


def random_inputs(
    shape: tuple[int, ...], kind: RandomInputs, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Seeded random images of ``shape``: ``U[0, 1]`` or ``N(0, 1)`` per pixel."""
    sample = torch.rand if kind == "uniform" else torch.randn
    return sample(shape, generator=generator).to(device)


def impair_loss(
    model: ClassifierModel, reference: ClassifierModel, x_forget: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Eq. 12's first term as Alg. 8 computes it: ``KL(M_ref(z) || M(x_f))``, per sample."""
    with torch.no_grad():
        target = F.softmax(reference(z), dim=1)
    return F.kl_div(F.log_softmax(model(x_forget), dim=1), target, reduction="batchmean")


def impair(
    model: ClassifierModel,
    reference: ClassifierModel,
    x_forget: torch.Tensor,
    settings: ImpairRepairSettings,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One impair pass over D_f; returns the mean loss."""

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        x = x_forget[batch.to(x_forget.device)]
        z = random_inputs(tuple(x.shape), settings.random_inputs, generator, x.device)
        return impair_loss(model, reference, x, z)

    batches = seeded_batches(len(x_forget), settings.batch_size, generator)
    return train_epoch(optimizer, batches, batch_loss).losses.get("loss", 0.0)


def repair(
    model: ClassifierModel,
    x_retain: torch.Tensor,
    y_retain: torch.Tensor,
    settings: ImpairRepairSettings,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One cross-entropy pass over D_r; returns the mean loss."""

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(x_retain.device)
        return F.cross_entropy(model(x_retain[batch]), y_retain[batch])

    batches = seeded_batches(len(x_retain), settings.batch_size, generator)
    return train_epoch(optimizer, batches, batch_loss).losses.get("loss", 0.0)


def impair_repair(
    model: ClassifierModel,
    x_forget: torch.Tensor,
    x_retain: torch.Tensor,
    y_retain: torch.Tensor,
    settings: ImpairRepairSettings,
    context: UnlearningContext,
) -> ClassifierModel:
    """Algorithm 8: impair on D_f against a frozen copy's output on noise, repair on D_r.

    Parameters
    ----------
    model : ClassifierModel
        The model to unlearn, trained in place on ``context.device``.
    x_forget : torch.Tensor
        D_f's images (labels are not used).
    x_retain, y_retain : torch.Tensor
        D_r's images and labels.
    settings : ImpairRepairSettings
        Learning rate, passes, batch size, random inputs.
    context : UnlearningContext
        Device, seed and progress callback.

    Returns
    -------
    ClassifierModel
        ``model`` in eval mode.
    """
    if len(x_forget) == 0 or len(x_retain) == 0:
        raise ValueError("impair-repair needs a non-empty D_f and D_r")
    generator = torch.Generator().manual_seed(context.seed)
    model = model.to(context.device).train()
    reference = frozen_copy(model, context)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    for epoch in range(settings.impair_epochs):
        loss = impair(model, reference, x_forget, settings, generator, optimizer)
        context.report("impair", epoch + 1, settings.impair_epochs, loss=loss)
    for epoch in range(settings.repair_epochs):
        loss = repair(model, x_retain, y_retain, settings, generator, optimizer)
        context.report(
            "repair",
            epoch + 1,
            settings.repair_epochs,
            loss=loss,
            retain_accuracy=batch_accuracy(model, x_retain, y_retain),
        )
    return model.eval()


def frozen_copy(model: ClassifierModel, context: UnlearningContext) -> ClassifierModel:
    """A frozen eval-mode copy of ``model`` (the reference ``M_ref``)."""
    copy = context.build_model()
    copy.load_state_dict(model.state_dict())
    copy = copy.to(context.device).eval()
    for param in copy.parameters():
        param.requires_grad_(False)
    return copy
