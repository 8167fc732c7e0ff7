"""The recovery relay's policy: bounded cost, improvement-only hops, never worse than its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.config import RecoveryConfig
from fedforget.data import ArrayDataset, build_federation
from fedforget.federated import ClientUpdate, LocalFederation
from fedforget.models import build_model
from fedforget.recovery import (
    ClientScore,
    choose_candidates,
    in_process_callbacks,
    run_relay,
    sign_test,
    validation_objective,
    weighted_accuracy,
)
from fedforget.training import state_to_numpy


def test_weighted_accuracy_weighs_by_samples():
    scores = {0: ClientScore(1.0, 30), 1: ClientScore(0.0, 10)}
    assert weighted_accuracy(scores) == pytest.approx(0.75)


def test_candidates_are_bounded_and_include_the_weakest_known():
    known = {c: 1.0 - c / 100 for c in range(100)}  # client 99 is the weakest
    chosen = choose_candidates(range(100), 10, known, seed=0)
    assert len(chosen) == 10 and len(set(chosen)) == 10
    assert {99, 98, 97, 96, 95} <= set(chosen)
    assert choose_candidates(range(4), 10) == [0, 1, 2, 3]


def test_candidates_depend_on_the_clients_order_not_on_their_ids() -> None:
    """Flower's node ids change from run to run; the same clients in the same order (by
    client id) must give the same candidates, whatever ids they carry."""
    node_ids = [10**18 - 7 * position for position in range(100)]  # falling ids
    known = {node_ids[40]: 0.2, node_ids[3]: 0.1}
    chosen = choose_candidates(node_ids, 10, known, seed=3)
    positions = [node_ids.index(node) for node in chosen]
    assert positions == choose_candidates(range(100), 10, {40: 0.2, 3: 0.1}, seed=3)


def _toy_state(value: float):
    return {"w": np.array([value], dtype=np.float32)}


def test_a_harmful_hop_is_rejected_and_the_input_returned():
    """Training that always lowers every client's accuracy never changes the output."""

    def evaluate(states, clients):
        return [{c: ClientScore(float(state["w"][0]), 10) for c in clients} for state in states]

    def train(state, clients, lr, mu):
        return [ClientUpdate(_toy_state(float(state["w"][0]) - 0.1), 10, c) for c in clients]

    start = _toy_state(0.8)
    settings = RecoveryConfig(max_hops=4, min_accuracy=0.99, candidates=5, clients_per_hop=2)
    result = run_relay(start, range(20), evaluate, train, settings, lr=0.05)
    assert result.state is start
    assert [h.kept for h in result.hops] == [False] * 4
    assert [h.lr for h in result.hops] == [0.05, 0.025, 0.0125, 0.00625]
    assert result.evaluations == 5 * 5 and result.trainings == 2 * 4


def test_helpful_hops_are_kept_until_the_standard_is_met():
    def evaluate(states, clients):
        return [{c: ClientScore(float(state["w"][0]), 10) for c in clients} for state in states]

    def train(state, clients, lr, mu):
        return [ClientUpdate(_toy_state(float(state["w"][0]) + 0.1), 10, c) for c in clients]

    settings = RecoveryConfig(max_hops=5, min_accuracy=0.95, candidates=3, clients_per_hop=1)
    result = run_relay(_toy_state(0.7), range(3), evaluate, train, settings, lr=0.05)
    assert [h.kept for h in result.hops] == [True, True, True]
    assert result.objective == pytest.approx(1.0)


@pytest.fixture(scope="module")
def skewed(make_config):
    """Digits, 10 clients holding one label shard each: a relay hop there is dangerous."""
    torch.set_num_threads(1)
    config = make_config(
        clients=10,
        data={"partition": "shards", "shards_per_client": 1},
        deletion={"mode": "random", "share": 0.02},
        train={"rounds": 4, "batch_size": 16},
    )
    federation = build_federation(config)

    def build():
        return build_model("lenet5", federation.num_classes, 1, federation.image_size)

    torch.manual_seed(0)
    local = LocalFederation.from_federation(federation, build, config.train, drop_deleted=True)
    state = local.run(state_to_numpy(build()), 4)
    return local, state


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relay_on_a_skewed_federation_never_lowers_the_objective(skewed, seed):
    local, state = skewed
    evaluate, train = in_process_callbacks(local, 200, local_epochs=2, seed=seed)
    settings = RecoveryConfig(max_hops=3, min_accuracy=1.0, candidates=6, clients_per_hop=2)
    result = run_relay(state, sorted(local.clients), evaluate, train, settings, 0.2, seed=seed)
    assert result.objective >= result.start_objective
    final = weighted_accuracy(evaluate([result.state], list(result.candidates))[0])
    assert final == pytest.approx(result.objective)
    assert result.evaluations <= settings.candidates * (settings.max_hops + 1)


@pytest.mark.parametrize(
    ("restore", "margin", "hops"), [(True, 0.0, 3), (True, 0.005, 2), (False, 0.0, 0)]
)
def test_the_relay_restores_the_level_before_unlearning(restore, margin, hops):
    """Above paper 000's absolute standard, the relay still repairs what unlearning cost."""

    def evaluate(states, clients):
        return [{c: ClientScore(float(state["w"][0]), 10) for c in clients} for state in states]

    def train(state, clients, lr, mu):
        return [ClientUpdate(_toy_state(float(state["w"][0]) + 0.004), 10, c) for c in clients]

    settings = RecoveryConfig(
        max_hops=5,
        min_accuracy=0.97,
        candidates=3,
        clients_per_hop=1,
        restore=restore,
        restore_margin=margin,
    )
    start, before = _toy_state(0.98), _toy_state(0.99)
    result = run_relay(start, range(3), evaluate, train, settings, lr=0.05, before=before)
    assert len(result.hops) == hops and all(h.kept for h in result.hops)
    if restore:
        assert result.before_objective == pytest.approx(0.99)
        assert result.objective >= 0.99 - margin - 1e-6
        assert result.evaluations == 3 * (1 + hops)  # before and start in one call
    else:
        assert result.state is start


def test_candidates_keep_flower_node_ids_exact():
    """Node ids span the uint64 range; a draw must return them digit for digit."""
    ids = [int(i) for i in np.random.default_rng(0).integers(2**62, 2**64 - 1, 40, np.uint64)]
    chosen = choose_candidates(ids, 10, {ids[0]: 0.1, ids[1]: 0.2}, seed=0)
    assert set(chosen) <= set(ids) and len(set(chosen)) == 10
    assert {ids[0], ids[1]} <= set(chosen)


def _climbing(step: float):
    """``evaluate`` reads the toy weight as accuracy; ``train`` adds ``step`` to it."""

    def evaluate(states, clients):
        return [{c: ClientScore(float(state["w"][0]), 10) for c in clients} for state in states]

    def train(state, clients, lr, mu):
        return [ClientUpdate(_toy_state(float(state["w"][0]) + step), 10, c) for c in clients]

    return evaluate, train


def test_restoring_stops_at_the_level_before_unlearning_below_the_absolute_standard():
    """A federation at 95 % is restored to 95 %, not trained on toward paper 000's 96.5 %."""
    evaluate, train = _climbing(0.01)
    settings = RecoveryConfig(max_hops=5, min_accuracy=0.965, candidates=3, restore_margin=0.0)
    start, before = _toy_state(0.93), _toy_state(0.95)
    result = run_relay(start, range(3), evaluate, train, settings, lr=0.05, before=before)
    assert len(result.hops) == 2 and result.stopped == "standard"
    assert result.objective == pytest.approx(0.95)
    plain = settings.model_copy(update={"restore": False})
    result = run_relay(start, range(3), evaluate, train, plain, lr=0.05, before=before)
    assert len(result.hops) == 4 and result.stopped == "standard"


def test_a_hop_within_the_objectives_noise_is_not_kept():
    evaluate, train = _climbing(0.0005)
    start = _toy_state(0.9)
    settings = RecoveryConfig(max_hops=3, min_accuracy=0.99, candidates=3, min_gain=0.001)
    result = run_relay(start, range(3), evaluate, train, settings, lr=0.05)
    assert result.state is start and not any(h.kept for h in result.hops)
    assert result.stopped == "max_hops"


def test_the_time_budget_stops_before_a_hop_that_would_not_fit():
    """Each hop takes 3 s on a fake clock: a 7 s budget fits 2 hops (spent 6 + 3 > 7)."""
    seconds = {"now": 0.0}

    def clock():
        return seconds["now"]

    evaluate, climb = _climbing(0.01)

    def train(state, clients, lr, mu):
        seconds["now"] += 3.0
        return climb(state, clients, lr, mu)

    settings = RecoveryConfig(max_hops=5, min_accuracy=0.99, candidates=3, budget_rounds=1.0)
    start = _toy_state(0.5)
    result = run_relay(
        start, range(3), evaluate, train, settings, lr=0.05, budget_seconds=7.0, clock=clock
    )
    assert len(result.hops) == 2 and result.stopped == "budget"
    unbounded = run_relay(start, range(3), evaluate, train, settings, lr=0.05, clock=clock)
    assert len(unbounded.hops) == 5 and unbounded.stopped == "max_hops"


def test_scores_of_the_model_before_taken_in_advance_replace_its_evaluation():
    """The strategy has ``before`` scored while it unlearns: the relay asks only for the rest,
    and compares the two models over the candidates that scored both."""
    asked: list[int] = []

    def evaluate(states, clients):
        asked.append(len(states))
        return [{c: ClientScore(float(s["w"][0]), 10) for c in clients if c != 2} for s in states]

    _, train = _climbing(0.02)
    settings = RecoveryConfig(max_hops=5, candidates=3, clients_per_hop=1, restore_margin=0.0)
    before_scores = {0: ClientScore(0.93, 10), 1: ClientScore(0.93, 10), 2: ClientScore(0.1, 90)}
    result = run_relay(
        _toy_state(0.9),
        range(3),
        evaluate,
        train,
        settings,
        lr=0.05,
        before=_toy_state(0.99),
        before_scores=before_scores,
    )
    assert asked[0] == 1  # the unlearned model only
    assert result.before_objective == pytest.approx(0.93)  # client 2 did not score: left out
    assert len(result.hops) == 2 and result.stopped == "standard"  # 0.90 -> 0.92 -> 0.94


def test_a_declared_validation_set_makes_the_relay_hop_where_the_clients_see_no_loss():
    """After a client leaves a skewed federation the candidates' own accuracies can sit at the
    level before unlearning while the global model lost points: only the validation set
    shows it, and the relay repairs it."""

    def evaluate(states, clients):  # the candidates' view: no loss at all
        return [{c: ClientScore(0.99, 10) for c in clients} for _ in states]

    def train(state, clients, lr, mu):
        return [ClientUpdate(_toy_state(float(state["w"][0]) + 0.125), 10, c) for c in clients]

    def validate(state):  # 800 samples; each hop fixes 100 of them and breaks none
        return np.arange(800) < round(float(state["w"][0]) * 800)

    settings = RecoveryConfig(max_hops=5, candidates=3, restore_margin=0.0)
    start, before = _toy_state(0.5), _toy_state(0.875)  # exact in binary: 3 hops exactly
    blind = run_relay(start, range(3), evaluate, train, settings, lr=0.05, before=before)
    assert blind.state is start and blind.stopped == "standard"
    seen = run_relay(
        start, range(3), evaluate, train, settings, lr=0.05, before=before, validate=validate
    )
    assert [h.kept for h in seen.hops] == [True, True, True] and seen.stopped == "standard"
    assert seen.objective == pytest.approx(0.875)


class _PredictsItsInput(torch.nn.Module):
    """Predicts class ``x[0]``: its accuracy on a set is the share of samples with x[0] == y."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 4).float() * self.scale


def test_the_validation_objective_leaves_the_forgotten_classes_out():
    y = np.array([0, 1, 2, 3, 3, 3])
    x = np.array([0, 1, 0, 0, 0, 0], dtype=np.float32).reshape(6, 1, 1, 1)  # right on 0 and 1
    validation = ArrayDataset(x, y)
    state = state_to_numpy(_PredictsItsInput())
    every_class = validation_objective(RecoveryConfig(), validation, _PredictsItsInput)
    assert every_class(state).tolist() == [True, True, False, False, False, False]
    class_3_forgotten = validation_objective(RecoveryConfig(), validation, _PredictsItsInput, [3])
    assert class_3_forgotten(state).tolist() == [True, True, False]
    clients = RecoveryConfig(objective="clients")
    assert validation_objective(clients, validation, _PredictsItsInput) is None
    assert validation_objective(RecoveryConfig(), None, _PredictsItsInput) is None
    assert (
        validation_objective(RecoveryConfig(), validation, _PredictsItsInput, [0, 1, 2, 3]) is None
    )


def test_the_sign_test_counts_only_the_samples_a_hop_changed():
    before = np.array([True] * 90 + [False] * 10)
    fixes_all = np.ones(100, dtype=bool)
    assert sign_test(before, fixes_all) == pytest.approx(0.5**10)
    assert sign_test(before, before) == 1.0
    six_fixed_four_broken = before.copy()
    six_fixed_four_broken[:4] = False
    six_fixed_four_broken[90:96] = True
    assert sign_test(before, six_fixed_four_broken) == pytest.approx(386 / 1024)  # P(X >= 6)
    assert sign_test(six_fixed_four_broken, before) == pytest.approx(848 / 1024)  # P(X >= 4)


@pytest.mark.parametrize(("fixed", "broken", "kept"), [(6, 4, False), (12, 0, True)])
def test_on_a_validation_set_a_hop_is_kept_only_if_its_gain_beats_the_sets_noise(
    fixed: int, broken: int, kept: bool
):
    """A hop that fixes 6 validation samples and breaks 4 raises the accuracy by 0.2 pt of
    1,000 samples, more than ``min_gain``, but a coin does that 38 % of the time: discarded.
    Twelve fixes and no break (p = 0.0002) is kept."""
    start = np.zeros(1000, dtype=bool)
    start[:900] = True
    proposed = start.copy()
    proposed[900 : 900 + fixed] = True
    proposed[:broken] = False

    def evaluate(states, clients):
        return [{c: ClientScore(0.5, 10) for c in clients} for _ in states]

    def train(state, clients, lr, mu):
        return [ClientUpdate(_toy_state(1.0), 10, c) for c in clients]

    def validate(state):
        return proposed if state["w"][0] == 1.0 else start

    settings = RecoveryConfig(max_hops=1, candidates=3, min_gain=0.001)
    start_state = _toy_state(0.0)
    result = run_relay(start_state, range(3), evaluate, train, settings, 0.05, validate=validate)
    (hop,) = result.hops
    assert hop.after - hop.before == pytest.approx((fixed - broken) / 1000)
    assert hop.kept is kept and (hop.p_value < 0.05) is kept
    assert result.objective == pytest.approx(0.9 + kept * (fixed - broken) / 1000)


@pytest.mark.parametrize(
    ("start", "gains", "models_scored"),
    [
        (0.875, [], []),  # at the standard: no candidate is asked at all
        (0.5, [0.0, 0.125], [0.5]),  # a discarded hop leaves the scores as they were
        (0.625, [0.125, 0.125], [0.625, 0.75]),  # a kept hop: asked again before the next
    ],
)
def test_on_a_validation_set_the_candidates_score_only_before_a_hop(start, gains, models_scored):
    """On a validation set the candidates' scores only pick a hop's weakest: the relay asks
    for them when a hop is about to run, not to measure the objective."""
    scored: list[float] = []

    def evaluate(states, clients):
        scored.extend(float(state["w"][0]) for state in states)
        return [{c: ClientScore(0.5, 10) for c in clients} for _ in states]

    steps = iter(gains)

    def train(state, clients, lr, mu):
        weight = float(state["w"][0]) + next(steps)
        return [ClientUpdate(_toy_state(weight), 10, c) for c in clients]

    def validate(state):  # 800 samples; each 0.125 of weight fixes 100 and breaks none
        return np.arange(800) < round(float(state["w"][0]) * 800)

    settings = RecoveryConfig(max_hops=len(gains), candidates=3, restore_margin=0.0)
    before = _toy_state(0.875)
    result = run_relay(
        _toy_state(start),
        range(3),
        evaluate,
        train,
        settings,
        0.05,
        before=before,
        validate=validate,
        before_scores={0: ClientScore(0.9, 10)},
    )
    assert scored == models_scored
    assert result.evaluations == 3 * len(models_scored)
    assert [hop.kept for hop in result.hops] == [gain > 0 for gain in gains]
