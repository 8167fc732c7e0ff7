"""PGA: projected gradient ascent within a ball around the other clients' average.

Halimi et al., "Federated Unlearning: How to Efficiently Erase a Client in FL?" (ICML 2022
workshop on updatable ML; arXiv 2207.05521). A client leaves; its influence is removed in two
phases:

1. *Unlearning.* The leaving client maximises its empirical loss, but only within an L2 ball
   around a reference model that stands for "the federation without it": the average of
   the other clients' models of the last round. Plain gradient ascent on cross-entropy is
   unbounded (any weights that fit nothing maximise it); the ball keeps the result near a
   useful model.
2. *Post-training.* A few FedAvg rounds on the remaining clients recover the accuracy the
   ascent cost (the ``rounds`` need).

Equations (our reading; the paper text is not in this repository). With the last stored
round T (global model w_{T-1}, updates Delta_k^T, participants S_T) and leaving clients U:

    w_ref = w_{T-1} + sum_{k in S_T \\ U} n_k / N^{-U} Delta_k^T  =  w_T - c_T

(c_T = round T's skew, :func:`fedforget.unlearning.fast_fedul.round_skew`; the paper writes
the unweighted ``(N w_T - w_i) / (N - 1)`` for one client i and equal weights), then on D_f

    w <- Proj_{||w - w_ref|| <= delta} ( w + eta * grad_w CE(f_w(x), y) )

with delta = one third of the mean distance from w_ref to freshly initialised models (the
paper's radius as we recall it: far enough to leave the client's optimum, not so far that
the model becomes random), and early stopping once the accuracy on D_f falls to ``stop_accuracy``.

Choices where our reading leaves room:

- The ascent starts from w_ref (the paper's client starts from the global model; w_ref is
  that model less the client's last update, already a step towards removal).
- The radius's random models: ``random_models`` (5) fresh models of the federation's
  architecture, seeded; ``radius_scale`` = 1/3.
- ``epochs`` (5) caps the ascent, ``lr`` 0.01, plain SGD (no momentum), batch 64.
- ``stop_accuracy`` 0.5, checked after every step on a fixed sample of at most 512 of D_f.
  A leaving client's data is not all to be misclassified: its clean samples are, after a
  retrain, recognised at about test accuracy. At 0.1 the ascent on a digits client holding
  a backdoor and its clean share killed the network (test accuracy 10 %, not recovered by the
  2 post-training rounds); at 0.5 the backdoor fell from 73 % to 11 % at 94 % test accuracy
  (seed 0, ``tests/test_client_removal.py``'s setting).
- Post-training: ``post_rounds`` (2) FedAvg rounds at the federation's local epochs and
  learning rate (``lr_scale`` 1).
- Where it runs: in the paper the ascent runs on the leaving client; here on the server,
  with D_f sent by the leaving clients (``forget``), since the reference needs the stored
  history (``history``) that only the server holds. Several leaving clients ascend on the
  union of their data, from the reference without all of them.
- Client removal only (mode ``client``): for a sample deletion every client stays, so "the
  other clients' average" is the global model itself and the ball no longer encodes the
  federation without D_f. Other modes are refused with a one-line error.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch.nn import functional as F

from fedforget.data.modes import Kind
from fedforget.federated import weighted_average
from fedforget.models import ClassifierModel
from fedforget.training import (
    load_numpy_state,
    seeded_batches,
    state_to_numpy,
    to_tensors,
    train_epoch,
)
from fedforget.unlearning.base import (
    State,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    batch_accuracy,
    register_unlearner,
)
from fedforget.unlearning.fast_fedul import (
    require_leaving_clients,
    round_skew,
    subtract_floating,
)

PROBE_SAMPLES = 512
"""The stopping rule's accuracy is measured on a fixed seeded sample of D_f of this size."""


class PgaSettings(UnlearnerSettings):
    """Options of :class:`PgaUnlearner`.

    Attributes
    ----------
    epochs : int
        Most passes of projected ascent over D_f.
    lr : float
        SGD learning rate of the ascent.
    batch_size : int
        Mini-batch size on D_f.
    radius_scale : float
        delta = radius_scale x the mean distance from w_ref to fresh random models.
    random_models : int
        How many fresh models that mean is taken over.
    stop_accuracy : float
        Stop the ascent once the accuracy on D_f is at most this.
    post_rounds : int
        FedAvg rounds on the remaining clients after the ascent (0 = none).
    lr_scale : float
        Factor on the federation's local learning rate in the post-training rounds.
    """

    epochs: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1)
    radius_scale: float = Field(1 / 3, gt=0)
    random_models: int = Field(5, ge=1)
    stop_accuracy: float = Field(0.5, ge=0, le=1)
    post_rounds: int = Field(2, ge=0)
    lr_scale: float = Field(1.0, gt=0)


@register_unlearner
class PgaUnlearner(Unlearner):
    """Gradient ascent on D_f projected on a ball around w_ref, then FedAvg rounds."""

    name = "pga"
    needs = frozenset({"forget", "history", "rounds"})
    modes = frozenset({Kind.CLIENT})
    mode_reason = "its reference model is the average of the clients that stay"
    Settings = PgaSettings
    settings: PgaSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Ascend within the ball around w_ref, then post-train on the remaining clients."""
        self.check_mode(request)
        leaving = require_leaving_clients(self.name, request)
        cfg = self.settings
        train_on_clients = self.require_client_training(context) if cfg.post_rounds else None
        reference = subtract_floating(
            state_to_numpy(model), round_skew(request.history[-1], leaving)
        )
        radius = cfg.radius_scale * mean_distance_to_random(reference, context, cfg.random_models)
        model = load_numpy_state(model, reference).to(context.device).train()
        self._ascend(model, reference, radius, request, context)
        state = state_to_numpy(model.cpu())
        lr = cfg.lr_scale * context.local_lr
        for round_ in range(cfg.post_rounds):
            state = weighted_average(train_on_clients(state, context.local_epochs, lr))
            context.report("post-training", round_ + 1, cfg.post_rounds)
        return load_numpy_state(model, state).eval()

    def _ascend(
        self,
        model: ClassifierModel,
        reference: State,
        radius: float,
        request: UnlearningRequest,
        context: UnlearningContext,
    ) -> None:
        cfg = self.settings
        x, y = to_tensors(request.forget, context.device)
        ball = L2Ball(model, reference, radius)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(context.seed)
        probe = torch.randperm(len(x), generator=generator)[:PROBE_SAMPLES]
        probe_x, probe_y = x[probe], y[probe]

        def ascent_loss(batch: torch.Tensor) -> torch.Tensor:
            return -F.cross_entropy(model(x[batch]), y[batch])

        def project_and_check() -> bool:
            ball.project()
            return batch_accuracy(model, probe_x, probe_y) <= cfg.stop_accuracy

        if batch_accuracy(model, probe_x, probe_y) <= cfg.stop_accuracy:
            return
        for epoch in range(cfg.epochs):
            done = train_epoch(
                optimizer,
                seeded_batches(len(x), cfg.batch_size, generator),
                ascent_loss,
                stop=project_and_check,
            )
            context.report(
                "projected ascent",
                epoch + 1,
                cfg.epochs,
                forget_accuracy=batch_accuracy(model, probe_x, probe_y),
                distance=ball.distance(),
                radius=radius,
            )
            if done.stopped:
                return


class L2Ball:
    """The ball ``||w - w_ref|| <= radius`` over a model's parameters, and the projection."""

    def __init__(self, model: torch.nn.Module, reference: State, radius: float) -> None:
        self.params = [param for _, param in model.named_parameters()]
        device = self.params[0].device
        names = [name for name, _ in model.named_parameters()]
        self.center = [torch.from_numpy(np.asarray(reference[n])).to(device) for n in names]
        self.radius = radius

    @torch.no_grad()
    def distance(self) -> float:
        """L2 distance of the model's parameters to the centre."""
        pairs = zip(self.params, self.center, strict=True)
        squares = sum(float(((param - centre) ** 2).sum()) for param, centre in pairs)
        return squares**0.5

    @torch.no_grad()
    def project(self) -> None:
        """Move the parameters back onto the ball when they left it (radial projection)."""
        distance = self.distance()
        if distance <= self.radius:
            return
        scale = self.radius / distance
        for param, centre in zip(self.params, self.center, strict=True):
            param.copy_(centre + scale * (param - centre))


def mean_distance_to_random(reference: State, context: UnlearningContext, count: int) -> float:
    """Mean L2 distance (parameters) from ``reference`` to ``count`` fresh seeded models."""
    distances = []
    with torch.random.fork_rng(devices=[]):
        for index in range(count):
            torch.manual_seed(context.seed * 7919 + index)
            fresh = context.build_model()
            squares = sum(
                float(np.sum((p.detach().numpy().astype(np.float64) - reference[n]) ** 2))
                for n, p in fresh.named_parameters()
            )
            distances.append(squares**0.5)
    return float(np.mean(distances))
