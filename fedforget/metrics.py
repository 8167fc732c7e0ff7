"""Forgetting metrics: accuracies per data split, backdoor success, MIA, JSD, L2 and AIN.

The metrics are the experimenter's view of a simulation: they read the whole federation,
which the protocol itself never does.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn
from torch.nn import functional as F

from fedforget.attacks import EPS, ModelOutputs, build_attack, default_attack
from fedforget.data.deletion import Federation
from fedforget.data.sources import ArrayDataset
from fedforget.models import ClassifierModel
from fedforget.training import predict_proba, seeded_batches
from fedforget.unlearning.losses import attention_map

RETAIN_EVAL_SAMPLES = 10000
ATTENTION_SAMPLES = 1000


class PhaseMetrics(BaseModel):
    """Metrics of one model at one phase; fractions in [0, 1], ``None`` where not applicable."""

    test_accuracy: float
    forget_accuracy: float | None
    retain_accuracy: float
    forget_test_accuracy: float | None
    retain_test_accuracy: float
    backdoor_success: float | None
    mia_success: float | None
    mia_power: float | None = None


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Mean Jensen-Shannon divergence (natural log, in [0, ln 2]) between rows of p and q."""
    m = 0.5 * (p + q)
    kl_pm = (p * (np.log(p + EPS) - np.log(m + EPS))).sum(axis=1)
    kl_qm = (q * (np.log(q + EPS) - np.log(m + EPS))).sum(axis=1)
    return float(np.mean(0.5 * (kl_pm + kl_qm)))


def weight_distance(a: nn.Module, b: nn.Module) -> float:
    """L2 distance between the parameters of two models of one architecture."""
    total = sum(
        float((pa.detach().cpu() - pb.detach().cpu()).pow(2).sum())
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True)
    )
    return math.sqrt(total)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


class Evaluator:
    """Computes :class:`PhaseMetrics` for any model of a federation, on fixed splits.

    D_r is evaluated on a seeded subsample of at most ``RETAIN_EVAL_SAMPLES`` samples to keep
    per-round evaluation cheap; the same subsample serves the MIA's members, the test set its
    non-members. ``attack`` names a :mod:`fedforget.attacks` attack (``--mia``); by default
    the strongest the run can afford (``calibrated`` once :meth:`set_reference` gave it
    reference confidences, else ``loss``). ``mia_success`` is the attack's D_f score and
    ``mia_power`` its balanced accuracy on members vs non-members (0.5 = no power).
    """

    def __init__(
        self,
        federation: Federation,
        device: torch.device | None = None,
        seed: int = 0,
        attack: str | None = None,
    ) -> None:
        if attack is not None:
            build_attack(attack)  # an unknown name fails here, not after training
        self.federation = federation
        self.device = device or torch.device("cpu")
        self.seed = seed
        self.attack = attack
        self.reference: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        rng = np.random.default_rng(seed)
        retain = federation.retain_indices()
        keep = np.sort(rng.choice(len(retain), min(len(retain), RETAIN_EVAL_SAMPLES), False))
        self.retain = federation.train.subset(retain[keep])
        self.forget = federation.forget_set()
        self.forget_test, self.retain_test = federation.class_test_split()
        self.backdoor = federation.backdoor_test_set()

    def _probs(self, model: nn.Module, data: ArrayDataset | None) -> np.ndarray | None:
        if data is None or len(data) == 0:
            return None
        return predict_proba(model, data.x, self.device)

    def evaluate(self, model: nn.Module) -> PhaseMetrics:
        """All phase metrics of ``model``."""
        test_probs = self._probs(model, self.federation.test)
        retain_probs = self._probs(model, self.retain)
        forget_probs = self._probs(model, self.forget)
        mia = None
        if forget_probs is not None:
            mia = self._attack(retain_probs, test_probs, forget_probs)
        return PhaseMetrics(
            test_accuracy=_accuracy(test_probs, self.federation.test.y),
            forget_accuracy=None
            if forget_probs is None
            else _accuracy(forget_probs, self.forget.y),
            retain_accuracy=_accuracy(retain_probs, self.retain.y),
            forget_test_accuracy=self._split_accuracy(model, self.forget_test),
            retain_test_accuracy=self._split_accuracy(model, self.retain_test),
            backdoor_success=self._split_accuracy(model, self.backdoor),
            mia_success=None if mia is None else mia.forget_score,
            mia_power=None if mia is None else mia.power,
        )

    @property
    def attack_name(self) -> str:
        """The membership attack that fills ``mia_success`` and ``mia_power`` (for summaries)."""
        return self.attack or default_attack(self.reference is not None)

    def attack_sets(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(x, y)`` of the MIA's members, non-members and D_f, to score reference models on."""
        return [(d.x, d.y) for d in (self.retain, self.federation.test, self.forget)]

    def set_reference(self, confidences: Sequence[np.ndarray]) -> None:
        """Per-sample mean reference confidences on :meth:`attack_sets` (for ``calibrated``).

        See :func:`fedforget.attacks.reference_confidences`.
        """
        members, non_members, forget = confidences
        self.reference = (members, non_members, forget)

    def _attack(self, retain_probs, test_probs, forget_probs):
        name = self.attack_name
        ref = self.reference or (None, None, None)
        outputs = [
            ModelOutputs(probs, data.y, r)
            for probs, data, r in zip(
                (retain_probs, test_probs, forget_probs),
                (self.retain, self.federation.test, self.forget),
                ref,
                strict=True,
            )
        ]
        return build_attack(name).run(*outputs, seed=self.seed)

    def _split_accuracy(self, model: nn.Module, data: ArrayDataset | None) -> float | None:
        probs = self._probs(model, data)
        return None if probs is None else _accuracy(probs, data.y)

    def divergence(self, model: nn.Module, reference: nn.Module) -> dict[str, float]:
        """JSD of outputs on the test set and on D_f, and L2 of weights, to ``reference``."""
        test = self.federation.test.x
        result = {
            "jsd": jensen_shannon(
                predict_proba(model, test, self.device), predict_proba(reference, test, self.device)
            ),
            "l2": weight_distance(model, reference),
        }
        if len(self.forget):
            result["jsd_forget"] = jensen_shannon(
                predict_proba(model, self.forget.x, self.device),
                predict_proba(reference, self.forget.x, self.device),
            )
        return result


def unlearning_score(retain_accuracy: float, forget_accuracy: float) -> float:
    """Paper 004's unlearning score US (Eq. 8), in [0, 1]; accuracies as fractions.

    ``(exp(acc_r) + exp(1 - acc_f) - 2) / (2 (e - 1))``: 1 when the retained data are all
    right and the forgotten all wrong.
    """
    return (math.exp(retain_accuracy) + math.exp(1.0 - forget_accuracy) - 2.0) / (
        2.0 * (math.e - 1.0)
    )


def forgetting_rate(before: float, after: float) -> float:
    """Paper 003's FR (Eq. 15): the relative accuracy drop on D_f, ``(before - after) / before``."""
    return (before - after) / before if before else 0.0


def memory_retention_rate(before: float, after: float) -> float:
    """Paper 003's MRR (Eq. 16): accuracy on D_r after unlearning over the accuracy before."""
    return after / before if before else 0.0


@torch.no_grad()
def attention_discrepancy(
    model: ClassifierModel, reference: ClassifierModel, x: np.ndarray, device: torch.device
) -> float:
    """Paper 000's attention-map discrepancy (Table III) between a model and the reference.

    Mean over samples and over the models' ``feature_layers`` of the L2 distance between the
    normalised attention maps ``A(F) = sum_c |F_c|^2`` (Eq. 6-7) of the two models.
    """
    if not (hasattr(model, "forward_features") and hasattr(reference, "forward_features")):
        return float("nan")  # a plain nn.Module names no feature maps
    model.to(device).eval()
    reference.to(device).eval()
    distances = []
    for start in range(0, len(x), 500):
        batch = torch.from_numpy(x[start : start + 500]).to(device)
        _, ours = model.forward_features(batch)
        _, theirs = reference.forward_features(batch)
        per_layer = [
            (attention_map(ours[name]) - attention_map(theirs[name])).norm(dim=1) for name in ours
        ]
        distances.append(torch.stack(per_layer).mean(dim=0).cpu())
    return float(torch.cat(distances).mean()) if distances else float("nan")


RELEARN_SAMPLES = 512
RELEARN_ALPHA = 0.9
RELEARN_LR = 0.01
RELEARN_BATCH = 32
RELEARN_MAX_STEPS = 100


def relearn_steps(
    model: ClassifierModel,
    x: np.ndarray,
    y: np.ndarray,
    target_accuracy: float,
    *,
    lr: float = RELEARN_LR,
    batch_size: int = RELEARN_BATCH,
    max_steps: int = RELEARN_MAX_STEPS,
    seed: int = 0,
    device: torch.device | None = None,
) -> int:
    """Relearn time ``r_t`` of paper 002 Eq. 10: SGD steps until D_f is recognised again.

    A copy of ``model`` is fine-tuned on ``(x, y)`` (cross-entropy, plain SGD at ``lr``,
    seeded mini-batches of ``batch_size``) and its accuracy on ``(x, y)`` is checked before
    the first step and after every step; the result is the number of steps after which it
    first reaches ``target_accuracy``. ``model`` is not changed.

    Parameters
    ----------
    model : ClassifierModel
        The model whose relearn time is measured.
    x, y : np.ndarray
        The data to relearn (D_f, or a seeded subset of it).
    target_accuracy : float
        Accuracy on ``(x, y)`` that counts as relearnt (paper: alpha times the original
        model's accuracy on D_f).
    lr, batch_size, max_steps, seed
        SGD learning rate, mini-batch size, step cap and batch-order seed.
    device : torch.device, optional
        Where to compute (CPU by default).

    Returns
    -------
    int
        Steps in ``[0, max_steps]``; ``max_steps`` also when the target is never reached
        (the relearn time is then censored at the cap).
    """
    device = device or torch.device("cpu")
    learner = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.SGD(learner.parameters(), lr=lr)
    xs, ys = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    batches = _endless_batches(len(xs), batch_size, seed)
    steps = 0
    while steps < max_steps and _tensor_accuracy(learner, xs, ys) < target_accuracy:
        batch = next(batches).to(device)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(learner(xs[batch]), ys[batch]).backward()
        optimizer.step()
        steps += 1
    return steps


def _endless_batches(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Seeded mini-batch indices, one fresh permutation per epoch, without end."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from seeded_batches(n, batch_size, generator)


@torch.no_grad()
def _tensor_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    accuracy = float((model(x).argmax(dim=1) == y).float().mean())
    model.train(was_training)
    return accuracy


def anamnesis_index(unlearned_steps: int, retrain_steps: int) -> float | None:
    """Paper 002's Anamnesis Index AIN (Eq. 10): ``r_t(M_u) / r_t(M_s)``.

    The relearn time (:func:`relearn_steps`) of the unlearned model over that of the model
    retrained without D_f; about 1 is ideal, below 1 the unlearned model relearns D_f faster
    than the retrained one (its knowledge of D_f was hidden, not removed). ``None`` when the
    retrained model needs no step (it already recognises D_f: the ratio is undefined).
    """
    if retrain_steps <= 0:
        return None
    return unlearned_steps / retrain_steps
