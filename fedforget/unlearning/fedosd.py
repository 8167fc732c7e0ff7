"""FedOSD: unlearning cross-entropy with orthogonal steepest descent.

Pan et al., "Federated Unlearning with Gradient Descent and Conflict Mitigation" (AAAI 2025).
Two ideas:

1. *Unlearning cross-entropy* (UCE). Gradient ascent on cross-entropy diverges (the loss is
   unbounded above); FedOSD instead *descends* a bounded loss that is small once the true
   class is improbable: L_UCE(x, y) = -log(1 - p_y(x)), with p = softmax(f_w(x)). It is 0
   exactly when p_y = 0, and its gradient fades as the sample is forgotten.
2. *Orthogonal steepest descent*. The unlearning step must not fight the clients that stay:
   the descent direction is the steepest one for L_UCE among those orthogonal to every
   remaining client's gradient g_1..g_m, so to first order no remaining client's loss
   changes. For the unit-norm steepest descent that is the projection of the unlearning
   gradient onto the orthogonal complement of span{g_j}:

       d = g_u - G (G^T G)^+ G^T g_u,     G = [g_1 ... g_m],     w <- w - eta d

   (our reading; the paper text is not in this repository; the paper also normalises and
   rescales the direction, which a learning rate does here).
3. *Post-training without reverting*. After the unlearning, FedAvg rounds on the remaining
   clients would pull the model back towards the pre-unlearning one. FedOSD projects the
   post-training updates so that they do not conflict with the unlearning direction: an
   update Delta with <Delta, g_u> > 0 (it would raise L_UCE) loses its component along g_u,
   :func:`remove_conflict`, built on :func:`project_out`.

What this module implements: the unlearning phase (1-2) in full, and the post-training
projection (3) on the federation's own rounds: after the deletion, the strategy passes every
FedAvg aggregate through :meth:`FedOsdUnlearner.adjust_update`, which removes the update's
component that would raise L_UCE (:func:`remove_conflict` against the unlearning direction,
UCE's gradient on D_f at the unlearned model; it is kept fixed, because refreshing it needs
D_f after the deletion step, which the server no longer holds). ``post_rounds`` adds projected
FedAvg rounds *inside* the deletion step (default 0).

Choices where our reading leaves room:

- Needs ``forget`` and ``rounds`` (not ``retain``): the constraint is one gradient *per
  remaining client*, which only the clients can compute on their own data; a pooled retained
  sample has no client identity and would cost a privacy transfer. Each unlearning round asks
  every remaining client for one local epoch from the current model (``federated_train``);
  its pseudo-gradient is ``w - w_k`` (the direction only matters, as G is projected out).
- Per unlearning round, one pass of mini-batch UCE steps over D_f, every step's gradient
  projected out of the round's span{g_j} (one communication round buys many descent steps;
  the constraint directions are refreshed every round). SGD lr 0.01, batch 64, no momentum.
- ``rounds`` (5) caps the unlearning rounds; it stops once the accuracy on D_f is at most
  ``stop_accuracy`` (0.01).
- The unlearning gradient is computed on the server from D_f sent by the deleting clients
  (the paper's target client computes it locally).
- Every mode: nothing in UCE or the projection needs the deleting clients to leave; in
  sample modes the remaining clients' gradients are on the data they keep.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field

from fedforget.federated import weighted_average
from fedforget.models import ClassifierModel
from fedforget.training import (
    load_numpy_state,
    seeded_batches,
    state_to_numpy,
    to_tensors,
)
from fedforget.unlearning.base import (
    ClientUpdate,
    FederatedTrainFn,
    State,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    batch_accuracy,
    register_unlearner,
)

EPS = 1e-12
POST_DIRECTION_SAMPLES = 1024
"""The post-training's unlearning direction is UCE's gradient on at most this many of D_f."""


class FedOsdSettings(UnlearnerSettings):
    """Options of :class:`FedOsdUnlearner`.

    Attributes
    ----------
    rounds : int
        Most unlearning rounds (each: the remaining clients' gradients, then a pass on D_f).
    lr : float
        SGD learning rate of the projected UCE descent.
    batch_size : int
        Mini-batch size on D_f.
    stop_accuracy : float
        Stop once the accuracy on D_f is at most this.
    post_rounds : int
        Post-training FedAvg rounds with conflicting updates projected (0 = none).
    """

    rounds: int = Field(5, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1)
    stop_accuracy: float = Field(0.01, ge=0, le=1)
    post_rounds: int = Field(0, ge=0)


@register_unlearner
class FedOsdUnlearner(Unlearner):
    """Descend UCE on D_f orthogonally to the remaining clients' gradients."""

    name = "fedosd"
    needs = frozenset({"forget", "rounds"})
    Settings = FedOsdSettings
    settings: FedOsdSettings
    unlearning_direction: State | None = None
    """After :meth:`unlearn`: UCE's gradient on D_f at the result (see :meth:`adjust_update`)."""

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Unlearning rounds of projected UCE descent, then optional projected post-training."""
        cfg = self.settings
        train_on_clients = self.require_client_training(context)
        model = model.to(context.device).train()
        names = [name for name, _ in model.named_parameters()]
        x, y = to_tensors(request.forget, context.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(context.seed)
        for round_ in range(cfg.rounds):
            if batch_accuracy(model, x, y) <= cfg.stop_accuracy:
                break
            state = state_to_numpy(model)
            trained = train_on_clients(state, 1, context.local_lr)
            rows = orthonormal_rows(pseudo_gradients(state, trained, names))
            basis = torch.from_numpy(rows.astype(np.float32)).to(context.device)
            loss = self._projected_pass(model, optimizer, basis, x, y, generator)
            context.report(
                "orthogonal descent",
                round_ + 1,
                cfg.rounds,
                uce=loss,
                forget_accuracy=batch_accuracy(model, x, y),
                constraints=float(len(basis)),
            )
        if cfg.post_rounds:
            self._post_train(model, names, x, y, train_on_clients, context)
        self.unlearning_direction = uce_gradient(model, x, y)
        return model.eval()

    def adjust_update(self, before: State, aggregated: State) -> State:
        """The aggregate without its update component that would raise L_UCE on D_f."""
        direction = self.unlearning_direction
        if direction is None:
            return aggregated
        names = [n for n in direction if n in aggregated]
        update = {n: aggregated[n].astype(np.float64) - before[n] for n in names}
        update = remove_conflict(update, direction)
        adjusted = dict(aggregated)
        for n in names:
            adjusted[n] = (before[n] + update[n]).astype(aggregated[n].dtype)
        return adjusted

    def _projected_pass(
        self,
        model: ClassifierModel,
        optimizer: torch.optim.Optimizer,
        basis: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
    ) -> float:
        """One pass of UCE steps over D_f, each gradient projected out of ``basis``."""
        params = list(model.parameters())
        total, steps = 0.0, 0
        for batch in seeded_batches(len(x), self.settings.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = unlearning_cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            gradient = torch.cat([_gradient_of(p).reshape(-1) for p in params])
            _write_gradient(params, project_out_flat(gradient, basis))
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        return total / max(steps, 1)

    def _post_train(
        self,
        model: ClassifierModel,
        names: list[str],
        x: torch.Tensor,
        y: torch.Tensor,
        train_on_clients: FederatedTrainFn,
        context: UnlearningContext,
    ) -> None:
        """FedAvg rounds whose aggregate update loses its component that raises UCE."""
        for round_ in range(self.settings.post_rounds):
            direction = uce_gradient(model, x, y)
            state = state_to_numpy(model)
            trained = train_on_clients(state, context.local_epochs, context.local_lr)
            averaged = weighted_average(trained)
            update = {n: averaged[n].astype(np.float64) - state[n] for n in names}
            update = remove_conflict(update, direction)
            new_state = dict(averaged)
            for n in names:
                new_state[n] = (state[n] + update[n]).astype(state[n].dtype)
            load_numpy_state(model, new_state)
            context.report("projected post-training", round_ + 1, self.settings.post_rounds)


def uce_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> State:
    """UCE's gradient (float64, per parameter name) on at most ``POST_DIRECTION_SAMPLES`` of
    D_f: the unlearning direction that post-training updates must not oppose."""
    model.zero_grad(set_to_none=True)
    count = POST_DIRECTION_SAMPLES
    unlearning_cross_entropy(model(x[:count]), y[:count]).backward()
    direction = {
        name: _gradient_of(param).detach().cpu().double().numpy()
        for name, param in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return direction


def unlearning_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """UCE: the batch mean of ``-log(1 - p_y)``, computed as ``lse(z) - lse(z without y)``."""
    masked = logits.clone()
    masked[torch.arange(len(labels)), labels] = float("-inf")
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(masked, dim=1)).mean()


def pseudo_gradients(state: State, trained: list[ClientUpdate], names: list[str]) -> np.ndarray:
    """Each remaining client's ``w - w_k`` over the parameters ``names``, one row per client."""
    rows = [
        np.concatenate([(state[n].astype(np.float64) - u.state[n]).ravel() for n in names])
        for u in trained
    ]
    return np.stack(rows) if rows else np.empty((0, 0))


def orthonormal_rows(directions: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the rows of ``directions`` (QR, float64; null rows dropped)."""
    if directions.size == 0:
        return np.empty((0, directions.shape[-1] if directions.ndim == 2 else 0))
    q, r = np.linalg.qr(directions.T.astype(np.float64))
    diagonal = np.abs(np.diag(r))
    keep = diagonal > 1e-8 * max(float(diagonal.max()), EPS)
    return q[:, keep].T


def project_out_flat(vector: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``v - B^T (B v)`` for an orthonormal basis ``B`` (rows); ``v`` when ``B`` is empty."""
    if basis.numel() == 0:
        return vector
    return vector - basis.T @ (basis @ vector)


def project_out(update: State, directions: Sequence[State]) -> State:
    """``update`` without its component in the span of ``directions`` (arrays of one model).

    The core of FedOSD's projection, on the arrays the strategies exchange: the keys of
    ``update`` are projected jointly (as one vector); ``directions`` must hold those keys.
    The result is orthogonal to every direction, in float64.
    """
    keys = list(update)
    flat = np.concatenate([np.asarray(update[k], dtype=np.float64).ravel() for k in keys])
    if directions:
        matrix = np.stack(
            [
                np.concatenate([np.asarray(d[k], np.float64).ravel() for k in keys])
                for d in directions
            ]
        )
        basis = orthonormal_rows(matrix)
        if basis.size:
            flat = flat - basis.T @ (basis @ flat)
    result, start = {}, 0
    for key in keys:
        size = np.asarray(update[key]).size
        result[key] = flat[start : start + size].reshape(np.shape(update[key]))
        start += size
    return result


def remove_conflict(update: State, direction: State) -> State:
    """FedOSD's post-training rule: drop the component of ``update`` along ``direction``
    (the unlearning loss's gradient) when it would raise that loss (positive inner product).

    Only the keys of ``direction`` (the parameters) are projected, jointly; other arrays of
    ``update`` (buffers) pass unchanged. Arrays come back in float64.
    """
    result = {k: np.asarray(v, dtype=np.float64) for k, v in update.items()}
    keys = [k for k in update if k in direction]
    inner = sum(float(np.vdot(result[k], direction[k])) for k in keys)
    if inner > 0:
        result.update(project_out({k: result[k] for k in keys}, [direction]))
    return result


def _gradient_of(param: torch.nn.Parameter) -> torch.Tensor:
    return param.grad if param.grad is not None else torch.zeros_like(param)


def _write_gradient(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    start = 0
    for param in params:
        size = param.numel()
        param.grad = flat[start : start + size].view_as(param).clone()
        start += size
