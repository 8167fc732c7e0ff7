"""The performance-recovery relay's policy (paper 000, IV.C.3), without Flower.

Paper 000's relay: every user scores the unlearned model on its local data, the weakest one
trains it, the result is forwarded, repeat until a minimum standard is met. On a non-IID
federation a hop through one skewed client can wreck the model (it learns that client's few
classes), and asking every client at every hop makes the relay's cost grow with the
federation. This policy keeps the relay's idea and bounds both risks:

1. **Accept only measured improvements.** The server's objective is what it can measure
   without client data: the sample-weighted mean of the candidates' reported local
   accuracies, or the accuracy on a validation set the experimenter declares
   (``validate``). A hop whose result does not raise the objective by more than
   ``min_gain`` is discarded, its learning rate halved for the next try; the relay
   therefore never returns a model worse (by that objective) than its input. On a
   validation set the rise must also exceed the set's noise: the hop is kept only if it
   fixes significantly more of its samples than it breaks (a one-sided exact sign test,
   McNemar's, on the samples whose correctness the hop changed, at level
   ``significance``). A 1,000-sample set moves by 0.1 pt per sample, and a hop that
   fixed 6 samples and broke 4 is as likely to cost test accuracy as to add it.
2. **Several weakest clients per hop, with a proximal term.** The ``clients_per_hop``
   weakest candidates train the model (FedProx's ``mu / 2 ||w - w_hop||^2``, Li et al.
   2020), and their results are averaged by sample count (FedAvg, Eq. 1 of paper 000): one
   skewed client cannot pull the model to its own classes.
3. **Bounded cost.** The relay draws at most ``candidates`` clients once (the weakest that
   the caller already knows of first, e.g. from the accuracies in the last train replies,
   then a seeded sample of the rest) and only ever asks those: a hop costs ``candidates``
   evaluations and ``clients_per_hop`` trainings, whatever the federation's size. A time
   budget (``budget_seconds``, the strategy's ``budget_rounds`` of a FedAvg round less the
   unlearning's time) stops the relay before a hop that would not fit, judged by the mean
   duration of the hops so far.
4. **Restore, not train on.** With ``restore`` the standard is the objective of the model
   before unlearning (less ``restore_margin``), not paper 000's absolute ``min_accuracy``:
   the relay gives back what unlearning took, and stops.

The caller supplies two callbacks: ``evaluate(models, clients) -> [{client: ClientScore}]``
(one mapping per model: the model before and after unlearning are scored in one request
per client) and ``train(weights, clients, lr, proximal_mu) -> [ClientUpdate]``. The Flower strategy
sends messages in them; :func:`in_process_callbacks` implements them over a
:class:`fedforget.federated.LocalFederation` for tests and tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binomtest

from fedforget.config import RecoveryConfig
from fedforget.data import ArrayDataset
from fedforget.federated import ClientUpdate, LocalFederation, State, weighted_average
from fedforget.training import accuracy, load_numpy_state, predict_proba


@dataclass(frozen=True)
class ClientScore:
    """One client's report on a model: its local accuracy and how many samples it scored."""

    accuracy: float
    num_examples: int


EvaluateFn = Callable[[Sequence[State], Sequence[int]], Sequence[Mapping[int, ClientScore]]]
"""``(models, clients) -> [{client: ClientScore}]``: the clients score each model locally."""
TrainFn = Callable[[State, Sequence[int], float, float], Sequence[ClientUpdate]]
"""``(weights, clients, lr, proximal_mu) -> their locally trained weights``."""
ValidateFn = Callable[[State], np.ndarray]
"""``weights -> correct`` (one bool per sample) on a validation set the experimenter declared
to the server; the objective is its mean, and a hop is judged on the samples it changed."""


@dataclass(frozen=True)
class Hop:
    """What one relay hop did.

    Attributes
    ----------
    trained_on : tuple[int, ...]
        The clients that trained.
    lr : float
        The learning rate of the hop.
    before, after : float
        The objective before the hop and of its result.
    kept : bool
        Whether the result replaced the model.
    p_value : float
        On a validation set, the sign test's p-value that the hop fixed more samples than it
        broke (NaN on the clients' objective).
    """

    trained_on: tuple[int, ...]
    lr: float
    before: float
    after: float
    kept: bool
    p_value: float = float("nan")


@dataclass
class RelayResult:
    """The relay's output model and its record.

    ``evaluations`` and ``trainings`` count client calls (one client scoring its models or
    training once), the relay's cost in the units a federation pays.
    """

    state: State
    objective: float
    start_objective: float
    candidates: tuple[int, ...]
    hops: list[Hop] = field(default_factory=list)
    before_objective: float = float("nan")
    evaluations: int = 0
    trainings: int = 0
    stopped: str = "max_hops"
    """Why the relay ended: ``standard`` (met), ``max_hops``, ``budget`` or ``no_training``."""


def weighted_accuracy(scores: Mapping[int, ClientScore]) -> float:
    """Sample-weighted mean of the clients' local accuracies (NaN for no sample)."""
    total = sum(s.num_examples for s in scores.values())
    if total == 0:
        return float("nan")
    return sum(s.accuracy * s.num_examples for s in scores.values()) / total


def choose_candidates(
    clients: Sequence[int],
    limit: int,
    known: Mapping[int, float] | None = None,
    seed: int = 0,
) -> list[int]:
    """At most ``limit`` clients: the weakest half by ``known`` accuracy, the rest drawn at random.

    Known accuracies (e.g. reported in the last train replies) point at the clients that most
    need the relay; the random half keeps the objective representative of the federation.
    ``clients`` come in the caller's order and the choice keeps it: the seeded draw picks
    positions in it, so the order must be reproducible (the strategy orders Flower's nodes by
    client id; sorted by node id, which changes from run to run, the draw did too).
    """
    pool = list(dict.fromkeys(clients))
    if len(pool) <= limit:
        return pool
    chosen: list[int] = []
    if known:
        ranked = sorted((c for c in pool if c in known), key=lambda c: known[c])
        chosen = ranked[: limit // 2]
    rest = [c for c in pool if c not in chosen]
    rng = np.random.default_rng(seed)
    # Draw positions, not ids: Flower's node ids fill the uint64 range, and a numpy array
    # of them can turn to float64 and lose digits (a node that does not exist).
    picked = rng.choice(len(rest), limit - len(chosen), replace=False)
    chosen += [rest[int(i)] for i in picked]
    kept = set(chosen)
    return [c for c in pool if c in kept]


def run_relay(
    state: State,
    clients: Sequence[int],
    evaluate: EvaluateFn,
    train: TrainFn,
    settings: RecoveryConfig,
    lr: float,
    *,
    validate: ValidateFn | None = None,
    known: Mapping[int, float] | None = None,
    seed: int = 0,
    before: State | None = None,
    before_scores: Mapping[int, ClientScore] | None = None,
    budget_seconds: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RelayResult:
    """Run the bounded, improvement-only relay from ``state``; see the module docstring.

    Parameters
    ----------
    state : State
        The unlearned model's weights.
    clients : Sequence[int]
        The clients that may take part (the remaining federation).
    evaluate, train : EvaluateFn, TrainFn
        How candidates score weights and how clients train them.
    settings : RecoveryConfig
        ``max_hops``, ``min_accuracy`` (stop once the objective reaches it), ``candidates``,
        ``clients_per_hop``, ``proximal_mu``, ``local_epochs`` (used by ``train``).
    lr : float
        The first hop's learning rate; halved after every rejected hop.
    validate : ValidateFn, optional
        The declared validation set's per-sample correctness; when given its mean is the
        objective (a hop must also pass the sign test at ``settings.significance``), and the
        candidates' scores only pick the weakest: they are asked only before a hop, and again
        only after a kept one.
    known : Mapping[int, float], optional
        Accuracies the server already has (client -> accuracy) to pick candidates.
    seed : int
        Seeds the candidates' draw.
    before : State, optional
        The model before unlearning. With ``settings.restore`` the relay's standard becomes
        ``objective of before - restore_margin`` instead of ``min_accuracy``: the relay
        repairs what unlearning broke (the candidates score it with the unlearned model, in
        the same request).
    before_scores : Mapping[int, ClientScore], optional
        The candidates' scores of ``before``, when the caller had them scored already (the
        Flower strategy does it while the server unlearns); only the candidates that score
        the unlearned model count, so both objectives are over the same clients. Unused on a
        validation set.
    budget_seconds : float, optional
        Wall time the relay may spend: no hop starts once the time spent plus the mean hop
        so far would exceed it (the first hop starts if any time is left).
    clock : Callable[[], float]
        Seconds, for the budget (injectable for tests).

    Returns
    -------
    RelayResult
        Its ``state`` is ``state`` itself unless a hop improved the objective.
    """
    started = clock()
    candidates = choose_candidates(clients, settings.candidates, known, seed)
    restoring = before is not None and settings.restore
    result = RelayResult(state, 0.0, 0.0, tuple(candidates))
    scores: dict[int, ClientScore] | None = None  # on a validation set: asked when needed
    found: dict[int, ClientScore] | None = None
    if validate is None:  # the objective is the candidates' scores: they score now
        scores, found = _first_scores(
            evaluate, candidates, state, before if restoring else None, before_scores
        )
        result.evaluations += len(candidates)
    result.objective, correct = _measure(state, scores, validate)
    result.start_objective = result.objective
    standard = settings.min_accuracy
    if restoring:
        result.before_objective = _measure(before, found, validate)[0]
        if not math.isnan(result.before_objective):  # NaN: no candidate scored it
            standard = result.before_objective - settings.restore_margin
    hop_seconds: list[float] = []
    for _ in range(settings.max_hops):
        if result.objective >= standard:
            result.stopped = "standard"
            break
        if not _hop_fits(clock() - started, hop_seconds, budget_seconds):
            result.stopped = "budget"
            break
        hop_started = clock()
        if scores is None:  # on a validation set the scores only pick the weakest: asked now
            scores = dict(evaluate([result.state], candidates)[0])
            result.evaluations += len(candidates)
        weakest = sorted(scores, key=lambda c: scores[c].accuracy)[: settings.clients_per_hop]
        updates = list(train(result.state, weakest, lr, settings.proximal_mu))
        result.trainings += len(updates)
        if not sum(u.num_examples for u in updates):
            result.stopped = "no_training"
            break
        proposal = weighted_average(updates)
        proposal_scores = None
        if validate is None:
            proposal_scores = dict(evaluate([proposal], candidates)[0])
            result.evaluations += len(candidates)
        after, proposal_correct = _measure(proposal, proposal_scores, validate)
        p_value = float("nan") if correct is None else sign_test(correct, proposal_correct)
        significant = correct is None or p_value < settings.significance
        kept = after > result.objective + settings.min_gain and significant
        result.hops.append(Hop(tuple(weakest), lr, result.objective, after, kept, p_value))
        if kept:
            result.state, result.objective, scores = proposal, after, proposal_scores
            correct = proposal_correct
        else:
            lr /= 2
        hop_seconds.append(clock() - hop_started)
    else:
        if result.objective >= standard:
            result.stopped = "standard"
    return result


def _first_scores(
    evaluate: EvaluateFn,
    candidates: Sequence[int],
    state: State,
    before: State | None,
    before_scores: Mapping[int, ClientScore] | None,
) -> tuple[dict[int, ClientScore], dict[int, ClientScore]]:
    """The candidates' scores of ``state`` and of ``before`` (none without it), in one request;
    scores of ``before`` the caller already had count for the candidates that scored ``state``."""
    ask_before = before is not None and before_scores is None
    first = list(evaluate([state, before] if ask_before else [state], candidates))
    scores = dict(first[0])
    if ask_before:
        return scores, dict(first[1])
    known = before_scores or {}
    return scores, {c: known[c] for c in scores if c in known}


def _hop_fits(spent: float, hop_seconds: Sequence[float], budget: float | None) -> bool:
    """Whether another hop fits the budget, judged by the mean hop so far."""
    if budget is None:
        return True
    expected = sum(hop_seconds) / len(hop_seconds) if hop_seconds else 0.0
    return spent + expected <= budget and spent < budget


def _measure(
    state: State, scores: Mapping[int, ClientScore] | None, validate: ValidateFn | None
) -> tuple[float, np.ndarray | None]:
    """The objective of ``state`` and, on a validation set, its per-sample correctness."""
    if validate is None:
        return weighted_accuracy(scores or {}), None
    correct = np.asarray(validate(state), dtype=bool)
    return (float(correct.mean()) if correct.size else float("nan")), correct


def sign_test(before: np.ndarray, after: np.ndarray) -> float:
    """One-sided exact sign test (McNemar's) that ``after`` fixes more samples than it breaks.

    Only the samples whose correctness changed carry information; under "no better" each is
    a fix or a break with probability 1/2. Returns the p-value (1 when nothing changed).
    """
    fixed = int(np.count_nonzero(after & ~before))
    broken = int(np.count_nonzero(before & ~after))
    if fixed + broken == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broken, 0.5, alternative="greater").pvalue)


def validation_objective(
    settings: RecoveryConfig,
    validation: ArrayDataset | None,
    build_model: Callable[[], torch.nn.Module],
    forget_classes: Sequence[int] = (),
    device: torch.device | None = None,
) -> ValidateFn | None:
    """The relay's objective on the declared validation set, or ``None`` for the clients'.

    On a skewed federation the candidates' local accuracies are a skewed view of the model:
    each holds a few classes, and a loss on the classes they hardly hold escapes them. A
    validation set of the test distribution sees what the test set will. A class deletion's
    forgotten classes are left out of it: the relay must not try to restore them.
    """
    if settings.objective != "validation" or validation is None:
        return None
    kept = validation.subset(np.flatnonzero(~np.isin(validation.y, list(forget_classes))))
    if not len(kept):
        return None

    def validate(state: State) -> np.ndarray:
        model = load_numpy_state(build_model(), state)
        return predict_proba(model, kept.x, device).argmax(axis=1) == kept.y

    return validate


def in_process_callbacks(
    federation: LocalFederation, eval_samples: int, local_epochs: int, seed: int = 0
) -> tuple[EvaluateFn, TrainFn]:
    """``evaluate`` and ``train`` over an in-process federation (its clients' retained data).

    Each client scores at most ``eval_samples`` of its samples (a seeded subset), as the
    Flower client does with ``recovery.eval_samples``; training runs ``local_epochs`` with
    the federation's momentum and batch size.
    """
    rng = np.random.default_rng(seed)
    subsets = {
        cid: data.subset(np.sort(rng.permutation(len(data))[:eval_samples]))
        for cid, data in federation.clients.items()
    }
    hops = iter(range(1, 1_000_000))

    def evaluate(states: Sequence[State], clients: Sequence[int]) -> list[dict[int, ClientScore]]:
        models = [load_numpy_state(federation.build_model(), state) for state in states]
        return [
            {
                c: ClientScore(accuracy(model, subsets[c], federation.device), len(subsets[c]))
                for c in clients
                if len(subsets[c])
            }
            for model in models
        ]

    def train(state: State, clients: Sequence[int], lr: float, mu: float) -> list[ClientUpdate]:
        base = seed * 1_000_003 + next(hops) * 10_007
        return federation.train_clients(state, clients, local_epochs, lr, base, proximal_mu=mu)

    return evaluate, train
