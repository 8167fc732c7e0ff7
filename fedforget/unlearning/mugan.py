"""MuGAN, paper 002's class unlearning with the federation's conditional GAN (section 3.2).

Alg. 7: the trained GANs draw a synthetic D_f (``samples_per_class`` images of each forgotten
class) and a synthetic D_r (as many of every other class, labelled by the class they were
drawn for); then the impair-repair step of Alg. 8 (:mod:`fedforget.unlearning.impair_repair`)
unlearns with them. No real sample reaches the server: the only need is ``generator``, the
class-conditional GAN that the clients train alongside the classifier and the server averages
(one conditional GAN stands for the paper's "one GAN per class": ``G(z, y)`` for one ``y`` is
that class's generator).

Choices where the paper is vague or does not fit this setting:

- Modes: the paper defines MuGAN for class (and sub-class) deletion; a class-conditional GAN
  can draw a class but not a client's samples, a random subset or a trigger. Other modes
  raise a ``ValueError`` naming class mode.
- D_r's labels are the labels the images were drawn for (Alg. 7), not the model's predictions.
- Defaults: 2500 samples per class (the paper's), one repair pass, batch 32; the impair step
  runs 8 passes over D_f instead of the paper's one, and Adam at 2e-4 instead of 1e-4 (both
  below: the second measured on the federation's own GAN).

Measured on MNIST, class 3 forgotten (``/tmp/mugan_base.py`` trains the stand-ins: LeNet-5,
2 epochs of SGD at 0.05 with momentum 0.9, 98.6 % on class 3's test images, 98.5 % on the
rest; the same without class 3, the retrained reference, 98.68 % on the rest; a
``ConditionalGan`` trained 3 epochs on all of MNIST train, 2,814 steps, 581 s on the shared
CPU, whose draws the original model labels as their class 45-92 % of the time;
``/tmp/mugan_tune.py mugan '{...}'`` measures). Test accuracy on class 3 / on the other
classes:

===============================  ==========  ==========
settings                         class 3     rest
===============================  ==========  ==========
paper (1 impair pass, lr 1e-4)   70.20 %     97.72 %
3 impair passes                   9.31 %     97.06 %
5 impair passes                   1.49 %     96.85 %
**8 impair passes** (default)     0.00 %     96.33 %
1 pass, lr 3e-4                   0.00 %     94.82 %
1 pass, lr 1e-3                   0.00 %     92.44 %
===============================  ==========  ==========

Seeds 1 and 2 of the default: 0.00 % / 96.15 % and 0.00 % / 95.95 %, so the default keeps
the rest within 2.7 points of retraining (98.68 %). The loss grows with the learning rate
(1e-3: 92.44 %), consistent with the repair fitting the GAN's imperfect draws. 16 s on one
core (25,000 draws, 632 impair + 704 repair steps; ~60 s while three runs shared 2 cores).

On the federation's GAN (``fedforget compare --mode class --forget-class 3 --gan-epochs 12
--gan-clients 2``: 20 clients, 7 rounds; the judge reads 88 % of its 3s and 68-97 % of the
other classes as their class) lr 1e-4 left 1.29 % and 1.68 % of the 3s (two seeds); lr 2e-4
left 0.30-0.50 % at 96.0-96.6 % on the rest (three seeds, retrain 98.60 %); 12 impair passes
at 1e-4 left 0.89 % and 3.37 %. Hence lr 2e-4 (``/tmp/mugan_fed_tune.py``).

AIN (:func:`fedforget.metrics.relearn_steps`: relearn to 90 % of the original's accuracy on
512 class-3 training images): 5 steps against the retrained model's 31, AIN 0.16
(``/tmp/mugan_ain.py``): the class is hidden more than removed.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from fedforget.gan.networks import ConditionalGan
from fedforget.gan.training import sample_images
from fedforget.models import ClassifierModel
from fedforget.unlearning.base import (
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)
from fedforget.unlearning.impair_repair import ImpairRepairSettings, impair_repair


class MuGanSettings(ImpairRepairSettings):
    """Options of :class:`MuGanUnlearner` (the impair-repair options plus the sample size).

    Attributes
    ----------
    samples_per_class : int
        Images the GAN draws for each class, forgotten or kept (paper: 2500).
    impair_epochs : int
        Passes of the impair step over D_f (paper: 1; 8 forget class 3 on MNIST, see the
        module docstring).
    lr : float
        Adam learning rate of both steps (paper: 1e-4; see the module docstring).
    """

    samples_per_class: int = Field(2500, ge=1)
    impair_epochs: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0)


def require_class_mode(name: str, request: UnlearningRequest) -> tuple[int, ...]:
    """The forgotten classes, or a ``ValueError`` when the request is not a class deletion."""
    if request.mode != "class" or not request.forget_classes:
        raise ValueError(
            f"{name} unlearns classes only (class mode with forget_classes); "
            f"got mode '{request.mode}'"
        )
    return tuple(request.forget_classes)


def synthetic_split(
    gan: ConditionalGan,
    forget_classes: tuple[int, ...],
    num_classes: int,
    samples_per_class: int,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alg. 7's D_f and D_r drawn from ``gan``: ``(x_forget, x_retain, y_retain)`` tensors."""
    kept = [c for c in range(num_classes) if c not in forget_classes]
    if not kept:
        raise ValueError("every class is to be forgotten: nothing left to repair with")
    forget_labels = np.repeat(np.asarray(forget_classes, dtype=np.int64), samples_per_class)
    retain_labels = np.repeat(np.asarray(kept, dtype=np.int64), samples_per_class)
    x_forget = sample_images(gan, forget_labels, seed=seed, device=device)
    x_retain = sample_images(gan, retain_labels, seed=seed + 1, device=device)
    return (
        torch.from_numpy(x_forget).to(device),
        torch.from_numpy(x_retain).to(device),
        torch.from_numpy(retain_labels).to(device),
    )


@register_unlearner
class MuGanUnlearner(Unlearner):
    """Impair-repair on D_f and D_r drawn from the federation's conditional GAN (Alg. 7)."""

    name = "mugan"
    needs = frozenset({"generator"})
    Settings = MuGanSettings
    settings: MuGanSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Draw D_f and D_r from ``request.generator`` and run Alg. 8 on them."""
        forget_classes = require_class_mode(self.name, request)
        if request.generator is None:
            raise ValueError(f"{self.name} needs the federation's GAN (the 'generator' need)")
        x_forget, x_retain, y_retain = synthetic_split(
            request.generator,
            forget_classes,
            request.num_classes,
            self.settings.samples_per_class,
            context.seed,
            context.device,
        )
        return impair_repair(model, x_forget, x_retain, y_retain, self.settings, context)
