"""QuickDrop's core: gradient-matching distillation of a client's data, and unlearning on it.

Dhasade et al., "QuickDrop: Efficient Federated Unlearning by Integrated Dataset
Distillation" (Middleware 2024). During federated training every client also distils its
local data into a small synthetic set (a few images per class) by *gradient matching*
(Zhao, Mopuri and Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021), reusing
the model states its local training visits. At a deletion the clients unlearn on the
synthetic sets instead of their data: stochastic gradient *ascent* on the synthetic samples
of what is to be forgotten, then a recovery descent on the synthetic samples of the rest.
Both steps touch a few images per class, hence the speed.

**Not registered as an unlearner, and not wired into the federation.** It needs training-time
work on the clients that the ClientApp does not do yet: (1) after each local step of
``train.local`` (or once per round), call :func:`distillation_step` with the client's model
and a batch of its data, keeping the synthetic set in the client's state; (2) a deletion
message that runs :func:`unlearn_on_synthetic` on the client (class deletions: the forgotten
classes' synthetic images; client removal: the client's whole synthetic set is the forget
part) and the server's FedAvg of the results; (3) the costs (distillation seconds, synthetic
set bytes) in the run's record. Until then this module is a tested core.

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

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedforget.data.sources import ArrayDataset


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

    def __init__(self, synthetic: ArrayDataset, lr: float = 0.01, momentum: float = 0.5) -> None:
        self.images = torch.from_numpy(synthetic.x.copy()).requires_grad_(True)
        self.labels = torch.from_numpy(synthetic.y.copy())
        self.optimizer = torch.optim.SGD([self.images], lr=lr, momentum=momentum)

    def distillation_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """One gradient-matching update of every class's images at ``model``'s current weights.

        ``(x, y)`` is a batch of the client's real data; classes absent from it are skipped.
        Returns the summed matching distance before the update. ``model`` is not changed.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
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
        return float(total.detach())

    def synthetic_set(self) -> ArrayDataset:
        """The current synthetic images and their labels."""
        return ArrayDataset(x=self.images.detach().numpy().copy(), y=self.labels.numpy().copy())


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
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for data, sign, steps in ((forget, -1.0, ascent_steps), (retain, 1.0, recovery_steps)):
        if len(data) == 0:
            continue
        x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            (sign * F.cross_entropy(model(x), y)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
    return model.eval()
