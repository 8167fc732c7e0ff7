"""QuickDrop's core: gradient-matching distillation of a client's data, and unlearning on it.

Dhasade et al., "QuickDrop: Efficient Federated Unlearning by Integrated Dataset
Distillation" (Middleware 2024). During federated training every client also distils its
local data into a small synthetic set (a few images per class) by *gradient matching*
(Zhao, Mopuri and Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021), reusing
the model states its local training visits. At a deletion the clients unlearn on the
synthetic sets instead of their data: stochastic gradient *ascent* on the synthetic samples
of what is to be forgotten, then a recovery descent on the synthetic samples of the rest.
Both steps touch a few images per class, hence the speed.

How it runs in fedforget (the ``synthetic`` need). When the run's strategy (or a ``compare``
branch) is ``quickdrop``, every FedAvg training message says so, and each client runs
:meth:`GradientMatchingDistiller.distillation_step` every ``distil_every`` local steps of its
training (:func:`distillation_hook`), keeping its synthetic set (``images_per_class`` images
per class it holds) in its ``Context.state`` from round to round; the image optimizer's
momentum restarts each round (only the images are kept). At the deletion the server asks every
active client for its set (``query.synthetic``), splits them (:func:`split_synthetic`:
``class`` mode: every client's images of the forgotten classes; ``client`` mode: the leaving
clients' whole sets) and runs :func:`unlearn_on_synthetic` **on the server**, where the paper
has each client unlearn on its own synthetic set and the server average: one model, the
same synthetic images, without the clients' round trip. The clients then drop the synthetic
images of what they deleted. ``backdoor`` and ``random`` deletions are refused: a synthetic
image condenses a whole class of a client, so chosen samples (triggered ones, a random share)
have no synthetic part of their own. Costs in the record: ``distillation_client_seconds``
(client compute spent distilling during training) and ``synthetic_bytes`` (the sets the
server received at the deletion).

Equations (our reading of the two papers; their texts are not in this repository). Synthetic
images S_c of class c, real batch B_c, the model's parameters theta split by layer l:

    D(g_S, g_B) = sum_l sum_i (1 - cos(g_S^{l,i}, g_B^{l,i}))
    S_c <- S_c - eta_S grad_S D(grad_theta CE(f(S_c), c), grad_theta CE(f(B_c), c))

where i runs over a layer's output units (rows of the weight reshaped to (out, -1)); a bias
is one row. Unlearning: ``ascent_steps`` of theta <- theta + eta grad CE on S_forget, then
``recovery_steps`` of theta <- theta - eta grad CE on S_retain.

Choices where our reading leaves room: synthetic images start from randomly drawn real images
of their class (Zhao et al.'s "real" initialisation) and are clamped to the data's range
[0, 1] after each step; SGD on the images with momentum 0.5 (Zhao et al.) at lr 0.01 (their
0.1 reduced the distance less on 8x8 digits at fixed weights: 1413 -> 1252 against 1122 in
30 steps); the ascent clips the gradient to norm 1 (as our ``gradient-ascent``) so that a few
images cannot blow the model up, with 50 ascent and 50 recovery steps at lr 0.1 (on digits,
10 images per class: the 3s went from 92 % to 0 % at 91 % on the rest; 10-20 steps at lr
0.01 left 86-92 %).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from fedforget.data.modes import DeletionMode, Kind
from fedforget.data.sources import ArrayDataset
from fedforget.federated import State
from fedforget.unlearning.base import (
    HookSetup,
    TrainingHook,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)


def matching_distance(synthetic: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """``sum_l sum_i (1 - cos)`` between two lists of per-parameter gradients (Zhao et al.)."""
    total = synthetic[0].new_zeros(())
    for g_syn, g_real in zip(synthetic, real, strict=True):
        rows_syn = g_syn.reshape(g_syn.shape[0], -1) if g_syn.dim() > 1 else g_syn.view(1, -1)
        rows_real = g_real.reshape(rows_syn.shape)
        cosine = F.cosine_similarity(rows_syn, rows_real, dim=1, eps=1e-8)
        total = total + (1 - cosine).sum()
    return total


def initial_synthetic_set(
    data: ArrayDataset, images_per_class: int, num_classes: int, seed: int
) -> ArrayDataset:
    """Randomly drawn real images of each class present (as many as it has, at most ``ipc``)."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in range(num_classes):
        pool = np.flatnonzero(data.y == label)
        if len(pool):
            picked.append(rng.choice(pool, min(images_per_class, len(pool)), replace=False))
    indices = np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    subset = data.subset(indices)
    return ArrayDataset(x=subset.x.copy(), y=subset.y.copy())


class GradientMatchingDistiller:
    """A client's synthetic set and the optimizer that moves its images.

    Parameters
    ----------
    synthetic : ArrayDataset
        The initial synthetic set (e.g. :func:`initial_synthetic_set`).
    lr, momentum : float
        SGD settings of the image updates.
    """

    def __init__(
        self,
        synthetic: ArrayDataset,
        lr: float = 0.01,
        momentum: float = 0.5,
        device: torch.device | None = None,
    ) -> None:
        device = device or torch.device("cpu")
        self.images = torch.from_numpy(synthetic.x.copy()).to(device).requires_grad_(True)
        self.labels = torch.from_numpy(synthetic.y.copy()).to(device)
        self.seconds = 0.0  # spent in distillation steps
        self.optimizer = torch.optim.SGD([self.images], lr=lr, momentum=momentum)

    def distillation_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """One gradient-matching update of every class's images at ``model``'s current weights.

        ``(x, y)`` is a batch of the client's real data; classes absent from it are skipped.
        Returns the summed matching distance before the update. ``model`` is not changed.
        """
        started = time.perf_counter()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        total = self.images.new_zeros(())
        for label in torch.unique(self.labels):
            real = y == label
            if not bool(real.any()):
                continue
            mine = self.labels == label
            real_loss = F.cross_entropy(model(x[real]), y[real])
            real_grads = [g.detach() for g in torch.autograd.grad(real_loss, params)]
            syn_loss = F.cross_entropy(model(self.images[mine]), self.labels[mine])
            syn_grads = torch.autograd.grad(syn_loss, params, create_graph=True)
            total = total + matching_distance(list(syn_grads), real_grads)
        if total.requires_grad:
            total.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.images.clamp_(0.0, 1.0)
        model.zero_grad(set_to_none=True)
        distance = float(total.detach())
        self.seconds += time.perf_counter() - started
        return distance

    def synthetic_set(self) -> ArrayDataset:
        """The current synthetic images and their labels."""
        return ArrayDataset(
            x=self.images.detach().cpu().numpy().copy(), y=self.labels.cpu().numpy().copy()
        )


class DistillationHook(TrainingHook):
    """A client's distillation during its local training: a step every ``every`` local steps.

    Parameters
    ----------
    distiller : GradientMatchingDistiller
        The client's synthetic set and its optimizer.
    every : int
        Local steps between two distillation steps (the first local step distils).
    """

    def __init__(self, distiller: GradientMatchingDistiller, every: int) -> None:
        self.distiller = distiller
        self.every = every
        self.steps = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.steps % self.every == 0:
            self.distiller.distillation_step(model, x, y)
        self.steps += 1

    def kept(self) -> State:
        """The synthetic set (``x``, ``y``), kept on the client from round to round."""
        synthetic = self.distiller.synthetic_set()
        return {"x": synthetic.x, "y": synthetic.y}

    def spent_seconds(self) -> float:
        """Seconds spent in distillation steps."""
        return self.distiller.seconds


def distillation_hook(distiller: GradientMatchingDistiller, every: int) -> DistillationHook:
    """The hook that distils on every ``every``-th local step (in-process federations)."""
    return DistillationHook(distiller, every)


def concatenated(parts: Iterable[ArrayDataset], like: ArrayDataset) -> ArrayDataset:
    """The samples of ``parts`` as one set (empty, shaped like ``like``, when there are none)."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return like.subset(np.empty(0, dtype=np.int64))
    return ArrayDataset.concatenate(parts)


def split_synthetic(
    sets: dict[int, ArrayDataset],
    mode: Kind,
    forget_classes: Iterable[int] = (),
    leaving: Iterable[int] = (),
) -> tuple[ArrayDataset, ArrayDataset]:
    """The clients' synthetic sets (by partition id) split into (forget part, the rest).

    ``class`` mode: every image of a forgotten class; ``client`` mode: the leaving clients'
    whole sets. Other modes have no synthetic part of their own (see the module docstring).
    """
    if not sets:
        raise ValueError("no client sent a synthetic set")
    like = next(iter(sets.values()))
    if mode == Kind.CLIENT:
        gone = set(leaving)
        forget = [data for client, data in sorted(sets.items()) if client in gone]
        retain = [data for client, data in sorted(sets.items()) if client not in gone]
        return concatenated(forget, like), concatenated(retain, like)
    if mode == Kind.CLASS:
        classes = np.asarray(sorted(forget_classes), dtype=np.int64)
        masks = {client: np.isin(data.y, classes) for client, data in sets.items()}
        forget = [sets[c].subset(np.flatnonzero(m)) for c, m in sorted(masks.items())]
        retain = [sets[c].subset(np.flatnonzero(~m)) for c, m in sorted(masks.items())]
        return concatenated(forget, like), concatenated(retain, like)
    raise ValueError(f"a synthetic set has no part of its own for mode '{mode}'")


def unlearn_on_synthetic(
    model: nn.Module,
    forget: ArrayDataset,
    retain: ArrayDataset,
    *,
    ascent_steps: int = 50,
    recovery_steps: int = 50,
    lr: float = 0.1,
    max_grad_norm: float = 1.0,
) -> nn.Module:
    """QuickDrop's unlearning: full-batch ascent on ``forget``, then descent on ``retain``.

    Both sets are synthetic (a few images per class), so every step takes the whole set.
    """
    device = next(model.parameters()).device
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for data, sign, steps in ((forget, -1.0, ascent_steps), (retain, 1.0, recovery_steps)):
        if len(data) == 0:
            continue
        x, y = torch.from_numpy(data.x).to(device), torch.from_numpy(data.y).to(device)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            (sign * F.cross_entropy(model(x), y)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
    return model.eval()


class QuickDropSettings(UnlearnerSettings):
    """QuickDrop's options: the clients' distillation during training, the server's unlearning."""

    images_per_class: int = Field(10, ge=1, description="Synthetic images per class and client.")
    distil_every: int = Field(4, ge=1, description="Local steps between two distillation steps.")
    image_lr: float = Field(0.01, gt=0, description="SGD learning rate of the synthetic images.")
    ascent_steps: int = Field(50, ge=0, description="Gradient-ascent steps on the forget part.")
    recovery_steps: int = Field(50, ge=0, description="Descent steps on the rest.")
    lr: float = Field(0.1, gt=0, description="Learning rate of both unlearning phases.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient norm clip of every step.")


@register_unlearner
class QuickDropUnlearner(Unlearner):
    """QuickDrop (Dhasade et al. 2024): ascent on the synthetic forget part, recovery on the rest.

    The synthetic sets come from the clients' distillation during training (the ``synthetic``
    need); see the module docstring for the wiring and the choices.
    """

    name = "quickdrop"
    needs = frozenset({"synthetic"})
    modes = frozenset({Kind.CLASS, Kind.CLIENT})
    hook_need = "synthetic"
    mode_reason = (
        "a synthetic image condenses a whole class of a client: it forgets classes or clients, "
        "not chosen samples"
    )
    Settings = QuickDropSettings

    def new_distiller(
        self, data: ArrayDataset, num_classes: int, seed: int, device: torch.device | None = None
    ) -> GradientMatchingDistiller:
        """A client's distiller, its synthetic set drawn from ``data`` (QuickDrop's start)."""
        settings = self.settings
        start = initial_synthetic_set(data, settings.images_per_class, num_classes, seed)
        return GradientMatchingDistiller(start, lr=settings.image_lr, device=device)

    def training_hook(self, setup: HookSetup) -> DistillationHook:
        """The client's distillation, on the synthetic set it kept (drawn from its data at
        first, and again after a deletion dropped it)."""
        kept = setup.kept
        if kept is None or len(kept.get("y", ())) == 0:
            distiller = self.new_distiller(
                setup.data, setup.num_classes, setup.client_seed, setup.device
            )
        else:
            start = ArrayDataset(x=kept["x"], y=kept["y"])
            distiller = GradientMatchingDistiller(
                start, lr=self.settings.image_lr, device=setup.device
            )
        return DistillationHook(distiller, self.settings.distil_every)

    def kept_after_deletion(
        self, kept: State, mode: DeletionMode, classes: tuple[int, ...]
    ) -> State:
        """A class deletion drops the forgotten classes' images; any other deletion the whole
        set (its images condense every sample of their class, the deleted ones included)."""
        if mode.kind != Kind.CLASS or not classes or len(kept.get("y", ())) == 0:
            return {}
        keep = ~np.isin(kept["y"], list(classes))
        return {"x": kept["x"][keep], "y": kept["y"][keep]}

    def unlearn(
        self, model: nn.Module, request: UnlearningRequest, context: UnlearningContext
    ) -> nn.Module:
        self.check_mode(request)
        sets = {
            client: ArrayDataset(x=kept["x"], y=kept["y"])
            for client, kept in request.client_state.get(self.hook_need, {}).items()
        }
        if not sets:
            raise ValueError("quickdrop needs the clients' synthetic sets (none came)")
        forget, retain = split_synthetic(
            sets, request.kind, request.forget_classes, request.leaving_clients
        )
        if len(forget) == 0:
            raise ValueError("quickdrop needs the synthetic images of the deleted data (none came)")
        settings = self.settings
        torch.manual_seed(context.seed)
        model.to(context.device)
        context.report("quickdrop", 0, settings.ascent_steps + settings.recovery_steps)
        unlearned = unlearn_on_synthetic(
            model,
            forget,
            retain,
            ascent_steps=settings.ascent_steps,
            recovery_steps=settings.recovery_steps,
            lr=settings.lr,
            max_grad_norm=settings.max_grad_norm,
        )
        total = settings.ascent_steps + settings.recovery_steps
        context.report("quickdrop", total, total)
        return unlearned
