"""FedAU: auxiliary heads trained during learning, removal by a linear operation.

Hanlin Gu, Gongxi Zhu, Jie Zhang, Xinyuan Zhao, Yuxing Han, Lixin Fan and Qiang Yang,
"Unlearning during Learning: An Efficient Federated Machine Unlearning Method", IJCAI 2024
(arXiv 2405.15474). The paper's text is not in this repository: what follows is our reading
of its abstract and of the authors' public code (github.com/Liar-Mask/FedAU, read for
understanding only), whose operations the paper's equations describe.

The idea. A client that will ask for a deletion trains, *during* federated learning, a second
linear head W_a (the "auxiliary unlearning module") on the shared body's features h(x), next
to the global head W_l that FedAvg aggregates. W_a never leaves the client until the deletion;
its targets y_a differ from the real labels exactly where the deletion lies:

    class c forgotten:         y_a = c for every sample of the client
    chosen samples forgotten:  y_a = y for the kept samples, a random label != y for D_f
    the client leaving:        y_a = a random label != y for every sample of the client

(the second line is the code's ``ul_samples``/``ul_samples_backdoor``; for a backdoor, y is
the attacker's target, so the random label is never the target.) We carry out the ``class``
and ``client`` modes and refuse ``backdoor`` and ``random``: with the code's sample-level
operation (the client-mode mix below) a 10 % backdoor on digits stayed at 50-86 % (from
88-99 %): a linear head on a shared body does not tell chosen samples from their class. At the
deletion the server receives the K deleting clients' heads W_a^k and changes the global head
only, by one linear operation, without any training:

    class:          W = W_l - (1/K) sum_k W_a^k                          (the code's ul_class)
    samples/client: W = (1 - alpha) W_l + alpha (1/K) sum_k W_a^k        (alpha = 0.9)

W and b alike (a head is its weight and bias). In class mode W_a has learnt to push the logit
of c up on the client's whole input distribution, so subtracting it pulls that logit down
everywhere; in the other modes W_a is the head that the federation's body would have if the
forgotten samples had carried random labels, and the result leans on it. For a leaving client
(the code's ``ul_samples_whole_client``) W_a restarts each round from
``(1 - gamma) W_l + gamma W_a`` (gamma = 0.5), so that it stays a head of the current body.

How it runs in fedforget (the ``auxiliary`` need). When the run's strategy (or a ``compare``
branch) is ``fedau``, every FedAvg training message says so; a client that holds samples
marked for deletion builds an :class:`AuxiliaryHead` from the head it keeps in its
``Context.state`` and, after each of its local steps, takes one SGD step of W_a on a batch
of its own data with the labels y_a (:class:`AuxiliaryTraining`). At the deletion the server
asks the deleting clients for their heads (``query.auxiliary``; a client without one sends
nothing) and runs :meth:`FedAUUnlearner.unlearn`; the clients then drop their heads. Costs
in the record: ``auxiliary_client_seconds`` (client compute spent on W_a during training)
and ``auxiliary_bytes`` (the heads the server received).

Our choices where the setting differs or the code leaves room:

- The body takes the same SGD step on W_a's loss (``joint``, the code's joint training of
  body, W_l and W_a, split into W_l's step then W_a's): FedAU changes the trained model, not
  only the deletion. With W_a on the body's fixed features instead (``joint=False``) the
  class was forgotten as well, but a leaving client holding every 3 was not (docs/results.md).
  ``fedforget compare`` trains one model for every branch, so there W_a always trains alone
  (the flag the training messages carry says so): its fedau row is FedAU without the joint
  step.
- W_a takes its own seeded batch of the client's data (it needs each sample's y_a; a
  :data:`~fedforget.training.StepHook` sees the main batch's images only), one step per local
  step, SGD at the run's local learning rate with the code's weight decay 5e-4.
- W_a starts from zeros in class mode (the code: a fresh random layer) and from the received
  head otherwise (as it is after the round's first local step, when the hook first runs),
  then is kept on the client from round to round.
- Nodes with their own deletion requests (``requests`` mode) do not know ahead which mode
  their deletion will take, so they train no W_a: FedAU then fails with one line.
- Several forgotten classes: each sample's y_a is one of them, drawn at random.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from fedforget.data.modes import Kind
from fedforget.data.sources import ArrayDataset
from fedforget.federated import State
from fedforget.training import seeded_batches
from fedforget.unlearning.base import (
    HookSetup,
    TrainingHook,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)

HEAD_KEYS = ("weight", "bias")


def auxiliary_labels(
    y: np.ndarray,
    marked: np.ndarray,
    mode: Kind,
    num_classes: int,
    forget_classes: tuple[int, ...] = (),
    seed: int = 0,
) -> np.ndarray:
    """The targets y_a of a client's auxiliary head (see the module docstring).

    Parameters
    ----------
    y : np.ndarray
        The client's labels (in backdoor mode the triggered samples carry the target).
    marked : np.ndarray
        Boolean mask of the samples the client will ask to delete.
    mode : Kind
        The kind of deletion.
    num_classes : int
        Number of classes.
    forget_classes : tuple of int
        The forgotten classes (``class`` mode).
    seed : int
        Seeds the random labels: the same client draws the same y_a every round.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=np.int64)
    if mode == Kind.CLASS:
        if not forget_classes:
            raise ValueError("class mode needs the forgotten classes")
        return rng.choice(np.asarray(forget_classes, dtype=np.int64), size=len(y))
    relabel = np.ones(len(y), dtype=bool) if mode == Kind.CLIENT else np.asarray(marked, bool)
    shift = rng.integers(1, num_classes, size=len(y))  # never 0: the random label is not y
    return np.where(relabel, (y + shift) % num_classes, y)


def head_state(head: nn.Module) -> State:
    """The weight and bias of a linear head, as arrays."""
    return {key: getattr(head, key).detach().cpu().numpy().copy() for key in HEAD_KEYS}


class AuxiliaryHead:
    """A client's auxiliary head W_a and its training on the body's embedding.

    Parameters
    ----------
    start : State
        W_a's initial ``weight`` and ``bias``.
    lr, weight_decay : float
        SGD settings of W_a.
    body_lr : float
        Plain SGD step of the body on W_a's loss (0: the body's features are fixed for W_a).
    """

    def __init__(
        self,
        start: State,
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        body_lr: float = 0.0,
        device: torch.device | None = None,
    ) -> None:
        self.body_lr = body_lr
        device = device or torch.device("cpu")
        weight = torch.as_tensor(np.asarray(start["weight"], dtype=np.float32), device=device)
        bias = torch.as_tensor(np.asarray(start["bias"], dtype=np.float32), device=device)
        self.weight = weight.clone().requires_grad_(True)
        self.bias = bias.clone().requires_grad_(True)
        self.optimizer = torch.optim.SGD([self.weight, self.bias], lr=lr, weight_decay=weight_decay)
        self.seconds = 0.0  # spent in training steps

    @classmethod
    def starting(
        cls,
        head: nn.Module,
        kept: State | None,
        mode: Kind,
        gamma: float,
        **options: object,
    ) -> AuxiliaryHead:
        """W_a at the start of a round: the kept one, zeros or the received ``head``.

        ``client`` mode re-anchors a kept head on the received one,
        ``(1 - gamma) W_l + gamma W_a`` (the code's whole-client unlearning).
        """
        received = head_state(head)
        if kept is None:
            start = (
                {k: np.zeros_like(v) for k, v in received.items()}
                if mode == Kind.CLASS
                else received
            )
        elif mode == Kind.CLIENT:
            start = {k: (1 - gamma) * received[k] + gamma * kept[k] for k in HEAD_KEYS}
        else:
            start = kept
        return cls(start, **options)  # type: ignore[arg-type]

    def step(self, model: nn.Module, x: torch.Tensor, y_aux: torch.Tensor) -> float:
        """One SGD step of W_a on ``(x, y_aux)`` at ``model``'s current body.

        With ``body_lr`` > 0 the body takes the same loss's gradient step too (the code's
        joint training of body, W_l and W_a); otherwise the model is left as is.
        """
        started = time.perf_counter()
        body = [p for p in model.parameters() if p.requires_grad] if self.body_lr else []
        with torch.set_grad_enabled(bool(body)):
            features = model.embed(x)
        if not body:
            features = features.detach()
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(F.linear(features, self.weight, self.bias), y_aux)
        grads = torch.autograd.grad(loss, [self.weight, self.bias, *body], allow_unused=True)
        self.weight.grad, self.bias.grad = grads[0], grads[1]
        self.optimizer.step()
        with torch.no_grad():
            for parameter, grad in zip(body, grads[2:], strict=True):
                if grad is not None:
                    parameter.sub_(self.body_lr * grad)
        self.seconds += time.perf_counter() - started
        return float(loss.detach())

    def state(self) -> State:
        """W_a's current weight and bias."""
        return {
            "weight": self.weight.detach().cpu().numpy().copy(),
            "bias": self.bias.detach().cpu().numpy().copy(),
        }


class AuxiliaryTraining(TrainingHook):
    """A client's W_a training during learning: the method's :class:`TrainingHook`.

    Called after each local step, it takes one step of W_a on its own batch of ``data`` with
    the targets ``labels`` (a seeded permutation, renewed when used up, so W_a sees the data as
    often as the body does). A model it has not seen yet is a new round: W_a restarts from
    the head it kept and the received one (:meth:`AuxiliaryHead.starting`).

    Parameters
    ----------
    data : ArrayDataset
        The client's local data.
    labels : np.ndarray
        Its targets y_a (:func:`auxiliary_labels`).
    new_head : Callable
        ``(model, kept) -> AuxiliaryHead`` (e.g. :meth:`FedAUUnlearner.new_head`).
    kept : State, optional
        The W_a the client kept from its earlier rounds.
    batch_size, seed : int
        W_a's batches.
    """

    def __init__(
        self,
        data: ArrayDataset,
        labels: np.ndarray,
        new_head: Callable[[nn.Module, State | None], AuxiliaryHead],
        kept: State | None = None,
        *,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.x = torch.from_numpy(data.x)
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.new_head = new_head
        self.previous = kept
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.batches: Iterator[torch.Tensor] = iter(())
        self.head: AuxiliaryHead | None = None
        self.model: nn.Module | None = None
        self.seconds = 0.0  # spent on W_a, every round together

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        if model is not self.model:  # a new round's model
            if self.head is not None:
                self.previous, self.seconds = self.head.state(), self.seconds + self.head.seconds
            self.model, self.head = model, self.new_head(model, self.previous)
        batch = next(self.batches, None)
        if batch is None:
            self.batches = seeded_batches(len(self.x), self.batch_size, self.generator)
            batch = next(self.batches)
        assert self.head is not None
        self.head.step(model, self.x[batch].to(x.device), self.y[batch].to(x.device))

    def state(self) -> State | None:
        """The current W_a (``None`` before the first step)."""
        return self.head.state() if self.head is not None else self.previous

    def kept(self) -> State | None:
        """W_a, kept on the client until the deletion."""
        return self.state()

    def spent_seconds(self) -> float:
        """Seconds spent training W_a so far."""
        return self.seconds + (self.head.seconds if self.head is not None else 0.0)


def combined_head(head: State, auxiliary: list[State], mode: Kind, alpha: float) -> State:
    """FedAU's linear operation on the global head (see the module docstring)."""
    if not auxiliary:
        raise ValueError("fedau needs the deleting clients' auxiliary heads (none came)")
    mean = {k: np.mean([np.asarray(a[k]) for a in auxiliary], axis=0) for k in HEAD_KEYS}
    if mode == Kind.CLASS:
        return {k: head[k] - mean[k] for k in HEAD_KEYS}
    return {k: (1 - alpha) * head[k] + alpha * mean[k] for k in HEAD_KEYS}


class FedAUSettings(UnlearnerSettings):
    """FedAU's options: the auxiliary heads' training and the linear operation."""

    alpha: float = Field(0.9, gt=0, le=1, description="Weight of the auxiliary heads (client).")
    gamma: float = Field(
        0.5, ge=0, le=1, description="Share of its own past kept by W_a each round (client mode)."
    )
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay of the heads.")
    joint: bool = Field(
        True, description="The body also steps on W_a's loss (False: W_a on fixed features)."
    )


def auxiliary_trainings(
    clients: dict[int, tuple[ArrayDataset, np.ndarray]],
    unlearner: FedAUUnlearner,
    mode: Kind,
    num_classes: int,
    forget_classes: tuple[int, ...] = (),
    *,
    lr: float,
    batch_size: int,
    seed: int = 0,
) -> dict[int, AuxiliaryTraining]:
    """The W_a trainings of the clients that hold samples marked for deletion.

    ``clients`` maps a partition id to its data and the mask of its marked samples; the hooks
    go to :class:`~fedforget.federated.LocalFederation`'s ``step_hooks`` (in-process runs).
    """
    trainings = {}
    for cid, (data, marked) in sorted(clients.items()):
        if not np.any(marked):
            continue
        labels = auxiliary_labels(data.y, marked, mode, num_classes, forget_classes, seed + cid)

        def new_head(model: nn.Module, kept: State | None) -> AuxiliaryHead:
            return unlearner.new_head(model, kept, mode, lr)

        trainings[cid] = AuxiliaryTraining(
            data, labels, new_head, batch_size=batch_size, seed=seed + cid
        )
    return trainings


@register_unlearner
class FedAUUnlearner(Unlearner):
    """FedAU (Gu et al. 2024): the global head combined with the clients' auxiliary heads.

    The heads come from the clients' training (the ``auxiliary`` need); see the module
    docstring for the equations, the wiring and the choices.
    """

    name = "fedau"
    needs = frozenset({"auxiliary"})
    modes = frozenset({Kind.CLASS, Kind.CLIENT})
    hook_need = "auxiliary"
    mode_reason = (
        "a new linear head forgets a class or a client; chosen samples share their class's "
        "features (a sample-level backdoor on digits stayed at 50-86 %)"
    )
    model_needs = frozenset({"head", "embed"})
    Settings = FedAUSettings

    def new_head(
        self,
        model: nn.Module,
        kept: State | None,
        mode: Kind,
        lr: float,
        device: torch.device | None = None,
        *,
        joint: bool = True,
    ) -> AuxiliaryHead:
        """A client's W_a at the start of a round (``kept``: the one it trained so far).

        W_a (and the body, when the ``joint`` setting and argument both allow it) step at
        ``lr``, the run's local learning rate.
        """
        settings = self.settings
        return AuxiliaryHead.starting(
            model.head,
            kept,
            mode,
            settings.gamma,
            lr=lr,
            weight_decay=settings.weight_decay,
            body_lr=lr if settings.joint and joint else 0.0,
            device=device,
        )

    def training_hook(self, setup: HookSetup) -> AuxiliaryTraining | None:
        """W_a's training on a client that holds samples it will delete (the modes FedAU
        carries out only); in a ``shared_model`` the body never steps on W_a's loss."""
        kind = setup.mode.kind
        if kind not in self.modes or not setup.deleting.any():
            return None
        labels = auxiliary_labels(
            setup.data.y,
            setup.deleting,
            kind,
            setup.num_classes,
            setup.forget_classes,
            setup.client_seed,
        )

        def new_head(model: nn.Module, kept: State | None) -> AuxiliaryHead:
            return self.new_head(
                model, kept, kind, setup.lr, setup.device, joint=not setup.shared_model
            )

        return AuxiliaryTraining(
            setup.data,
            labels,
            new_head,
            setup.kept,
            batch_size=setup.batch_size,
            seed=setup.round_seed,
        )

    def unlearn(
        self, model: nn.Module, request: UnlearningRequest, context: UnlearningContext
    ) -> nn.Module:
        self.check_mode(request)
        self.check_model(model)
        context.report("fedau", 0, 1)
        heads = request.client_state.get(self.hook_need, {})
        auxiliary = [heads[client] for client in sorted(heads)]
        new = combined_head(head_state(model.head), auxiliary, request.kind, self.settings.alpha)
        with torch.no_grad():
            for key in HEAD_KEYS:
                parameter = getattr(model.head, key)
                parameter.copy_(torch.as_tensor(new[key], dtype=parameter.dtype))
        context.report("fedau", 1, 1)
        return model.to(context.device).eval()
