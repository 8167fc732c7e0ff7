"""Fine-tuning on D_f with random labels, the ``RL`` baseline (Graves et al. 2021).

Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning" (AAAI 2021), section "Unlearning":
relabel the sensitive data with randomly chosen incorrect labels and train on them for a few
iterations, so that the model's evidence for the true labels is overwritten. Paper 004 (section
"Baselines", item 5) runs it as "We fine-tune the Original by assigning arbitrary labels
randomly to D_f"; paper 002 (section 2) as "Randomized Label Unlearning".

We use the usual form of later benchmarks (e.g. SalUn's RL, Fan et al. 2024): D_f with random
wrong labels is mixed with retained data with its true labels, so that the model does not
collapse onto the random labels. Needs D_f (``forget``) and the retained sample the clients
send (``retain``, 150 per client).

Choices where the papers are vague:

- Random labels are drawn once (seeded from ``context.seed``), uniformly among the classes
  other than the sample's D_f label (in backdoor mode that label is the backdoor target, so the
  trigger is mapped anywhere but the target; in class mode a forgotten class's sample gets one
  of the other classes). Redrawing them every epoch measured no better.
- Both sets are shuffled together into one stream of mini-batches (plain concatenation: every
  sample, forgotten or retained, weighs the same).
- SGD with the federation's momentum (0.9), lr 0.01, batch 64, 5 epochs, picked on the MNIST
  harness. Every setting tried takes D_f to 0-1 %; the cost is clean accuracy, since D_f's
  images are ordinary digits whose random labels contradict the clean ones: fewer epochs cost
  more of it, more epochs gained little. The runs: ``docs/results.md``, "random-label".
"""

from __future__ import annotations

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
    accuracies,
    register_unlearner,
)


class RandomLabelSettings(UnlearnerSettings):
    """Options of :class:`RandomLabelUnlearner`.

    Attributes
    ----------
    epochs : int
        Passes over D_f (randomly relabelled) plus the retained sample.
    lr : float
        SGD learning rate.
    momentum : float
        SGD momentum.
    batch_size : int
        Mini-batch size of the mixed stream.
    """

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)


@register_unlearner
class RandomLabelUnlearner(Unlearner):
    """Train on D_f with random wrong labels mixed with retained data (RL, Amnesiac)."""

    name = "random-label"
    needs = frozenset({"forget", "retain"})
    Settings = RandomLabelSettings
    settings: RandomLabelSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Fine-tune ``model`` on relabelled D_f and the retained sample."""
        self.require_retained(request)
        cfg = self.settings
        device = context.device
        model = model.to(device).train()
        generator = torch.Generator().manual_seed(context.seed)
        x_forget, y_forget = to_tensors(request.forget, device)
        x_retain, y_retain = to_tensors(request.retain, device)
        noisy = random_wrong_labels(y_forget, request.num_classes, generator)
        x = torch.cat([x_forget, x_retain])
        y = torch.cat([noisy, y_retain])
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        probes = {"forget_accuracy": (x_forget, y_forget), "retain_accuracy": (x_retain, y_retain)}
        for epoch in range(cfg.epochs):
            batches = seeded_batches(len(x), cfg.batch_size, generator)
            done = train_epoch(optimizer, batches, lambda b: F.cross_entropy(model(x[b]), y[b]))
            metrics = {**done.losses, **accuracies(model, probes)}
            context.report("random labels", epoch + 1, cfg.epochs, **metrics)
        return model.eval()


def random_wrong_labels(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """A uniformly random label different from each given label (seeded by ``generator``)."""
    offsets = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offsets.to(labels.device)) % num_classes
