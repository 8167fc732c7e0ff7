"""Behaviour of the federated-unlearning baselines of issue 17: pga, fast-fedul, fedquit,
fedosd, not and quickdrop, plus the pieces they are built from.

Each behaviour test trains a tiny digits federation in-process (:mod:`fedforget.federated`).
Client removal (:func:`fedforget.testing.leaving_client_federation`): client 0 leaves, a backdoor
attacker (``backdoor``: clean training keeps a trigger, so recovery rounds alone do not
remove it). Sample deletion (``class``): every client deletes its 3s, for fedquit and fedosd,
which forget samples: given a whole client's data they misclassify its clean samples too
(see ``OVER_FORGETS`` in test_unlearners.py). Every test runs two seeds (partition, initial
weights, batch order) and compares with the model that did nothing, or with the same recovery
rounds without the method's own step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.metrics import Evaluator
from fedforget.models import build_model
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning import (
    ClientUpdate,
    HistoryRound,
    UnlearningContext,
    UnlearningRequest,
    build_unlearner,
)
from fedforget.unlearning.fast_fedul import round_skew
from fedforget.unlearning.fedosd import project_out, remove_conflict, unlearning_cross_entropy
from fedforget.unlearning.fedquit import virtual_teacher_logits
from fedforget.unlearning.negation import negate_layer
from fedforget.unlearning.pga import L2Ball
from fedforget.unlearning.quickdrop import distillation_hook

torch.set_num_threads(1)

ROUNDS = 6
SEEDS = (0, 1)


class Trained:
    """A trained leaving-client federation and what an unlearner may be given."""

    def __init__(self, make_config, make_federation, kind: str, seed: int) -> None:
        if kind == "class":
            self.config = make_config(
                seed=seed,
                deletion={"mode": "class", "forget_classes": [3], "share": 0.1},
                train={"batch_size": 16},
            )
            self.federation = build_federation(self.config)
        else:
            self.config, self.federation = make_federation(kind, seed)
        fed = self.federation
        self.build = lambda: build_model("lenet5", fed.num_classes, 1, fed.image_size)
        torch.manual_seed(seed)
        self.initial = state_to_numpy(self.build())
        self.history: list[HistoryRound] = []
        train = self.config.train
        distillers = {}
        if kind in ("class", "threes"):  # QuickDrop's clients distil while they train
            quickdrop = build_unlearner("quickdrop")
            distillers = {
                cid: quickdrop.new_distiller(fed.client_data(cid, False)[0], 10, seed=seed + cid)
                for cid in range(fed.num_clients)
            }
        every = 8  # half the default's distillation steps (digits' training took 2.6x, not 4.7x)
        hooks = {cid: distillation_hook(d, every) for cid, d in distillers.items()}
        full = LocalFederation.from_federation(
            fed, self.build, train, drop_deleted=False, seed=seed, step_hooks=hooks
        )
        self.state = full.run(self.initial, ROUNDS, self.history)
        self.synthetic = {cid: d.synthetic_set() for cid, d in distillers.items()}
        self.kept = LocalFederation.from_federation(
            fed, self.build, train, drop_deleted=True, seed=seed + 100
        )
        self.evaluator = Evaluator(fed)
        self.kind, self.seed = kind, seed
        self.mode = "class" if kind == "class" else "client"

    def unlearn(self, name: str, **options: object):
        leaving = (0,) if self.mode == "client" else ()
        synthetic = {cid: {"x": d.x, "y": d.y} for cid, d in self.synthetic.items()}
        request = UnlearningRequest(
            forget=self.federation.forget_set(),
            num_classes=self.federation.num_classes,
            mode=self.mode,
            forget_classes=(3,) if self.mode == "class" else (),
            history=tuple(self.history),
            leaving_clients=leaving,
            client_state={"synthetic": synthetic},
        )
        context = UnlearningContext(
            initial_state=self.initial,
            build_model=self.build,
            seed=self.seed,
            federated_train=self.kept.federated_train,
            local_epochs=self.config.train.local_epochs,
            local_lr=self.config.train.lr,
        )
        model = load_numpy_state(self.build(), self.state)
        return build_unlearner(name, **options).unlearn(model, request, context)

    def scores(self, model=None) -> tuple[float, float]:
        """(forgotten, kept): test 3s / backdoor success, and test accuracy on the rest."""
        model = model if model is not None else load_numpy_state(self.build(), self.state)
        metrics = self.evaluator.evaluate(model)
        if self.kind in ("threes", "class"):
            return metrics.forget_test_accuracy, metrics.retain_test_accuracy
        return metrics.backdoor_success, metrics.test_accuracy


@pytest.fixture(scope="module")
def trained(make_config, make_leaving_client_federation):
    """``trained(kind, seed)``: the trained federation, built once per module."""
    cache: dict[tuple[str, int], Trained] = {}

    def get(kind: str, seed: int) -> Trained:
        if (kind, seed) not in cache:
            cache[kind, seed] = Trained(make_config, make_leaving_client_federation, kind, seed)
        return cache[kind, seed]

    return get


def _forgets_and_keeps(
    setup: Trained,
    name: str,
    keep_margin: float,
    falls_short: str | None = None,
    forget_share: float = 0.5,
    **options: object,
) -> tuple[float, float]:
    """Unlearn with ``name``: the rest kept within ``keep_margin``, the forgotten data cut to
    ``forget_share`` of what it was (halved by default).

    ``falls_short``: the known reason why the forgetting may stop short of that; it must
    still move, and the test is then an expected failure.
    """
    before_forgotten, before_kept = setup.scores()
    learned = f"seed {setup.seed}: the setup did not learn ({before_forgotten:.3f})"
    assert before_forgotten > 0.6, learned
    after_forgotten, after_kept = setup.scores(setup.unlearn(name, **options))
    message = (
        f"{name} seed {setup.seed}: forgotten {before_forgotten:.3f} -> {after_forgotten:.3f}, "
        f"kept {before_kept:.3f} -> {after_kept:.3f}"
    )
    assert after_kept > before_kept - keep_margin, message
    if falls_short is not None and after_forgotten >= forget_share * before_forgotten:
        assert after_forgotten < before_forgotten, message
        pytest.xfail(falls_short)
    assert after_forgotten < forget_share * before_forgotten, message
    return after_forgotten, after_kept


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_fedul_removes_a_backdoor_client_without_training(trained, seed):
    # Without training, removing a quarter of the federation's updates costs accuracy: on an
    # AVX-512 Xeon, seeds 0-4 lost 10-29 points (0.907 -> 0.744, 0.929 -> 0.636, 0.802 ->
    # 0.515, 0.849 -> 0.704, 0.954 -> 0.858) while the backdoor went to 0 on each.
    _forgets_and_keeps(trained("backdoor", seed), "fast-fedul", keep_margin=0.35)


@pytest.mark.parametrize("seed", SEEDS)
def test_pga_removes_a_backdoor_client(trained, seed):
    # Its bounded ascent removed 47-100 % of the backdoor over seeds 0-4 on an AVX-512 Xeon
    # (seed 1: 0.709 -> 0.373), more than half on the AVX2 EPYC the margins were first set on.
    _forgets_and_keeps(trained("backdoor", seed), "pga", keep_margin=0.1, forget_share=0.6)


@pytest.mark.parametrize("seed", SEEDS)
def test_fedquit_forgets_a_class_alone(trained, seed):
    # No rounds, no history: the forgetting is FedQUIT's own step on D_f.
    _forgets_and_keeps(trained("class", seed), "fedquit", keep_margin=0.15)


@pytest.mark.parametrize("seed", SEEDS)
def test_fedosd_forgets_a_class(trained, seed):
    _forgets_and_keeps(trained("class", seed), "fedosd", keep_margin=0.15)


def test_fedosd_post_training_rounds_keep_the_forgetting(trained):
    setup = trained("class", 0)
    _forgets_and_keeps(setup, "fedosd", keep_margin=0.15, post_rounds=1)


@pytest.mark.parametrize("seed", SEEDS)
def test_not_removes_a_backdoor_that_the_same_recovery_rounds_keep(trained, seed):
    setup = trained("backdoor", seed)
    after, _ = _forgets_and_keeps(setup, "not", keep_margin=0.1)
    # The same 5 rounds without the negation (fine-tuning at the federation's rate).
    finetuned, _ = setup.scores(setup.unlearn("finetune", rounds=5, lr_scale=1.0))
    assert after < finetuned - 0.1, f"seed {seed}: not {after:.3f}, finetune {finetuned:.3f}"


@pytest.mark.parametrize("seed", SEEDS)
def test_quickdrop_forgets_a_class_on_the_distilled_sets(trained, seed):
    # Unlearning touches only the clients' synthetic images (10 per class and client).
    _forgets_and_keeps(trained("class", seed), "quickdrop", keep_margin=0.15)


QUICKDROP_CLIENT_CLIFF = (
    "QuickDrop's fixed 50 ascent steps on the leaving client's synthetic set are a cliff: on an "
    "AVX2 EPYC the test 3s went 78 -> 41 % (seed 0) and 94 -> 91 % (seed 2), where another CPU "
    "reached 0 %; 75-100 steps drop the rest to 11-27 % (docs/results.md, quickdrop)"
)


def _threes_learned(trained, count: int) -> list[Trained]:
    """The first ``count`` of seeds 0-5 whose FedAvg learned the 3s (test 3s above 60 %).

    FedAvg learns a class held by one client erratically, and which seeds learn it depends
    on the CPU's rounding (seed 0 scored 0.438 on an AVX-512 Xeon, above 0.6 on an AVX2
    EPYC): a setup that never knew the 3s has nothing for the method to forget.
    """
    learned = []
    for seed in range(6):
        setup = trained("threes", seed)
        if setup.scores()[0] > 0.6:
            learned.append(setup)
        if len(learned) == count:
            return learned
    raise AssertionError(f"FedAvg learned the 3s on {len(learned)} of seeds 0-5")


@pytest.mark.parametrize("rank", range(len(SEEDS)))
def test_quickdrop_removes_the_client_holding_a_class(trained, rank):
    setup = _threes_learned(trained, len(SEEDS))[rank]
    _forgets_and_keeps(setup, "quickdrop", keep_margin=0.15, falls_short=QUICKDROP_CLIENT_CLIFF)


# -- the pieces ---------------------------------------------------------------------------


def _update(client: int, value: float, n: int) -> ClientUpdate:
    return ClientUpdate({"w": np.full(3, value, np.float32)}, n, client)


def test_round_skew_is_the_round_update_minus_the_one_without_the_leaving_client():
    stored = HistoryRound(1, {0: _update(0, 4.0, 10), 1: _update(1, 1.0, 30)})
    # With client 0: (10*4 + 30*1) / 40 = 1.75; without: 1.0.
    np.testing.assert_allclose(round_skew(stored, [0])["w"], 0.75)
    np.testing.assert_allclose(round_skew(stored, [7])["w"], 0.0)  # not a participant


def test_project_out_leaves_nothing_along_the_directions():
    rng = np.random.default_rng(0)
    shapes = {"a": (4, 3), "b": (5,)}
    update = {k: rng.normal(size=s) for k, s in shapes.items()}
    directions = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(3)]
    projected = project_out(update, directions)
    for direction in directions:
        inner = sum(np.vdot(projected[k], direction[k]) for k in shapes)
        assert abs(inner) < 1e-9
    again = project_out(projected, directions)  # a projection: idempotent
    for key in shapes:
        np.testing.assert_allclose(again[key], projected[key], atol=1e-12)
    assert sum(np.sum(projected[k] ** 2) for k in shapes) < sum(
        np.sum(update[k] ** 2) for k in shapes
    )


def test_remove_conflict_only_drops_a_component_that_raises_the_unlearning_loss():
    direction = {"w": np.array([1.0, 0.0])}
    agreeing = {"w": np.array([-2.0, 1.0])}  # lowers the loss: kept as is
    np.testing.assert_allclose(remove_conflict(agreeing, direction)["w"], [-2.0, 1.0])
    conflicting = {"w": np.array([2.0, 1.0]), "counter": np.array(3)}  # a buffer passes
    projected = remove_conflict(conflicting, direction)
    np.testing.assert_allclose(projected["w"], [0.0, 1.0])
    assert projected["counter"] == 3


def test_unlearning_cross_entropy_is_minus_log_of_one_minus_p_true():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    p_true = torch.softmax(logits, dim=1)[torch.arange(6), labels]
    expected = (-torch.log1p(-p_true)).mean()
    assert torch.allclose(unlearning_cross_entropy(logits, labels), expected, atol=1e-6)


@pytest.mark.parametrize("true_logit", ["mean", "min"])
def test_virtual_teacher_lowers_only_the_true_class_below_the_top(true_logit):
    torch.manual_seed(0)
    logits = torch.randn(8, 5) * 3
    labels = logits.argmax(dim=1)  # the model is right: the hard case
    teacher = virtual_teacher_logits(logits, labels, true_logit)
    assert (teacher.argmax(dim=1) != labels).all()
    others = torch.ones_like(logits, dtype=torch.bool)
    others[torch.arange(8), labels] = False
    assert torch.equal(teacher[others], logits[others])


def test_negate_layer_negates_the_first_layer_only():
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert negate_layer(model, None) == ["conv1.weight", "conv1.bias"]
    for key, value in model.state_dict().items():
        expected = -before[key] if key.startswith("conv1.") else before[key]
        assert torch.equal(value, expected), key


def test_l2_ball_projection_lands_on_the_ball():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    centre = {k: np.zeros(v.shape, np.float32) for k, v in model.state_dict().items()}
    ball = L2Ball(model, centre, radius=0.1)
    assert ball.distance() > 0.1
    ball.project()
    assert ball.distance() == pytest.approx(0.1, rel=1e-5)


def test_fedosd_adjustment_drops_only_what_would_raise_the_unlearning_loss():
    unlearner = build_unlearner("fedosd")
    assert unlearner.adjusts_updates and not build_unlearner("distill").adjusts_updates
    before = {"w": np.zeros(2, np.float32), "buffer": np.zeros(1, np.float32)}
    aggregated = {"w": np.array([2.0, 1.0], np.float32), "buffer": np.ones(1, np.float32)}
    assert unlearner.adjust_update(before, aggregated) is aggregated  # no direction yet
    unlearner.unlearning_direction = {"w": np.array([1.0, 0.0])}
    adjusted = unlearner.adjust_update(before, aggregated)
    np.testing.assert_allclose(adjusted["w"], [0.0, 1.0])
    assert adjusted["w"].dtype == np.float32 and adjusted["buffer"] is aggregated["buffer"]
    lowering = {"w": np.array([-2.0, 1.0], np.float32), "buffer": np.ones(1, np.float32)}
    np.testing.assert_allclose(unlearner.adjust_update(before, lowering)["w"], [-2.0, 1.0])
