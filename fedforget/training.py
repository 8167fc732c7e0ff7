"""Local training and evaluation loops on in-memory arrays.

Batches are sliced from tensors with a seeded permutation instead of a ``DataLoader``: with
MNIST-sized data on a CPU the loader's per-batch overhead costs more than LeNet-5's step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedforget.data.sources import ArrayDataset

EVAL_BATCH = 1000


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto`` into ``cuda`` when a GPU is present, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_optimizer_modules() -> None:
    """Create a throwaway optimizer so that the modules torch loads on first use are loaded.

    The first ``torch.optim`` optimizer of a process imports ``torch._dynamo`` (about a second
    on a 2-core machine). A simulation's server creates its first optimizer in the unlearning
    step, so without this the import is billed to the deletion instead of the start-up.
    """
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def seeded_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield index tensors of a fresh seeded permutation of ``range(n)``."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


StepHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], None]
"""``hook(model, x_batch, y_batch)``, called after each optimizer step of :func:`train_local`
(QuickDrop distils the client's data at the model states its training visits; FedAU trains
its auxiliary head, and the body with it, beside the client's training)."""

BatchLoss = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]
"""``batch indices -> objective`` or ``(objective, {name: term to report})``."""


@dataclass(frozen=True)
class EpochResult:
    """What one pass of :func:`train_epoch` did.

    Attributes
    ----------
    losses : dict of str to float
        Each reported term averaged over the steps run (``loss``: the objective itself, when
        the batch loss returns no terms).
    steps : int
        Optimizer steps run.
    stopped : bool
        Whether ``stop`` ended the pass early.
    """

    losses: dict[str, float]
    steps: int
    stopped: bool = False


def train_epoch(
    optimizer: torch.optim.Optimizer,
    batches: Iterable[torch.Tensor],
    batch_loss: BatchLoss,
    *,
    max_grad_norm: float | None = None,
    stop: Callable[[], bool] | None = None,
    after_step: Callable[[], None] | None = None,
) -> EpochResult:
    """One pass of gradient steps, the loop every training method shares.

    For each batch of indices: clear the gradients, compute ``batch_loss(batch)``, back-propagate
    its objective, clip the gradients' norm when ``max_grad_norm`` is set, step the optimizer,
    call ``after_step()`` (e.g. a projection of the weights), and stop early when ``stop()``
    says so. The methods differ only in the batches (usually
    :func:`seeded_batches`) and the loss, so their seeded results do not depend on who wrote
    the loop.
    """
    sums: dict[str, float] = {}
    steps = 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        result = batch_loss(batch)
        objective, terms = result if isinstance(result, tuple) else (result, {"loss": result})
        objective.backward()
        if max_grad_norm is not None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        steps += 1
        if stop is not None and stop():
            return EpochResult(_means(sums, steps), steps, stopped=True)
    return EpochResult(_means(sums, steps), steps)


def _means(sums: dict[str, float], steps: int) -> dict[str, float]:
    return {name: total / max(steps, 1) for name, total in sums.items()}


def to_tensors(data: ArrayDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels as tensors on ``device`` (no copy on the CPU)."""
    return torch.from_numpy(data.x).to(device), torch.from_numpy(data.y).to(device)


@dataclass(frozen=True)
class TrainResult:
    """What one call of :func:`train_local` did."""

    num_examples: int
    sample_passes: int
    mean_loss: float
    seconds: float
    index_counts: np.ndarray


def train_local(
    model: nn.Module,
    data: ArrayDataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    momentum: float = 0.0,
    device: torch.device | None = None,
    proximal_mu: float = 0.0,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD and cross-entropy.

    ``proximal_mu > 0`` adds FedProx's proximal term ``mu / 2 * ||w - w_start||^2`` (Li et al.,
    2020, Eq. 2), ``w_start`` being the weights the call started from: it bounds how far one
    client's skewed data can pull the model, which the recovery relay needs when it trains on
    a few weak clients of a non-IID federation (:mod:`fedforget.recovery`). ``on_step`` is
    called after every step with the model and the batch (it leaves the model as is, except
    FedAU's joint step of the body on its auxiliary loss).

    Returns
    -------
    TrainResult
        Includes ``index_counts``: how many times each local sample was used, which the client
        uses to prove that deleted samples are never trained on after their deletion.
    """
    device = device or torch.device("cpu")
    model.to(device).train()
    x, y = to_tensors(data, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    generator = torch.Generator().manual_seed(seed)
    counts = np.zeros(len(data), dtype=np.int64)
    total_loss, steps = 0.0, 0
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in seeded_batches(len(data), batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            objective = loss if anchor is None else loss + proximal_term(model, anchor, proximal_mu)
            objective.backward()
            optimizer.step()
            if on_step is not None:
                on_step(model, x[batch], y[batch])
            np.add.at(counts, batch.numpy(), 1)
            total_loss += float(loss.detach())
            steps += 1
    return TrainResult(
        num_examples=len(data),
        sample_passes=int(counts.sum()),
        mean_loss=total_loss / max(steps, 1),
        seconds=time.perf_counter() - started,
        index_counts=counts,
    )


def proximal_term(model: nn.Module, anchor: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's ``mu / 2 * ||w - anchor||^2`` over the parameters of ``model``."""
    squared = [(p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True)]
    return 0.5 * mu * torch.stack(squared).sum()


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: np.ndarray, device: torch.device | None = None
) -> np.ndarray:
    """Softmax outputs (N, C) of ``model`` on images ``x``."""
    device = device or torch.device("cpu")
    model.to(device).eval()
    outputs = []
    for start in range(0, len(x), EVAL_BATCH):
        batch = torch.from_numpy(x[start : start + EVAL_BATCH]).to(device)
        outputs.append(F.softmax(model(batch), dim=1).cpu())
    if not outputs:
        return np.empty((0, 0), dtype=np.float32)
    return torch.cat(outputs).numpy()


def accuracy(model: nn.Module, data: ArrayDataset, device: torch.device | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (NaN on an empty set)."""
    if len(data) == 0:
        return float("nan")
    probs = predict_proba(model, data.x, device)
    return float((probs.argmax(axis=1) == data.y).mean())


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """A detached CPU copy of ``model.state_dict()`` as NumPy arrays."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    """Load NumPy arrays into ``model`` (in place) and return it."""
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model
