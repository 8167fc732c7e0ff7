"""Membership attacks report their power; the calibrated one sees through sample difficulty.

Synthetic outputs make the ground truth known: a sample's loss is its difficulty (shared by
every model) minus a memorisation gain for members. Margins hold over several seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedforget.attacks import (
    FORGET_FALSE_POSITIVE_RATE,
    ModelOutputs,
    UnknownAttackError,
    attack_names,
    best_threshold,
    build_attack,
    default_attack,
    membership_attack_success,
    reference_confidences,
    scaled_confidence,
)

SEEDS = (0, 1, 2)
CLASSES = 10


def softmax_with_loss(loss: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Two-level softmax rows whose true-label probability is exp(-loss)."""
    p_true = np.exp(-loss)
    probs = np.repeat(((1 - p_true) / (CLASSES - 1))[:, None], CLASSES, axis=1)
    probs[np.arange(len(loss)), labels] = p_true
    return probs


def population(rng, n, gain, spread=1.0):
    """Members', non-members' and member D_f outputs; references see each sample's difficulty.

    A sample's loss under a model that never saw it is its difficulty; a member's loss is
    lower by ``gain``. The reference confidence is that of the unseen loss.
    """
    sets = []
    for member in (True, False, True):
        difficulty = rng.exponential(spread, n) + 0.01
        labels = rng.integers(0, CLASSES, n)
        loss = np.maximum(difficulty - (gain if member else 0.0), 0.001)
        reference = scaled_confidence(softmax_with_loss(difficulty, labels), labels)
        sets.append(ModelOutputs(softmax_with_loss(loss, labels), labels, reference))
    return sets


def test_registry_lists_the_attacks_and_rejects_unknown_names():
    assert {"median", "svc", "loss", "calibrated"} <= set(attack_names())
    with pytest.raises(UnknownAttackError, match="choose one of"):
        build_attack("nope")
    assert default_attack(True) == "calibrated" and default_attack(False) == "loss"


@pytest.mark.parametrize("seed", SEEDS)
def test_without_signal_every_attack_reports_chance_power(seed):
    rng = np.random.default_rng(seed)
    members, non_members, forget = population(rng, 2000, gain=0.0)
    for name in attack_names():
        result = build_attack(name).run(members, non_members, forget, seed)
        assert abs(result.power - 0.5) < 0.05, (name, result)


@pytest.mark.parametrize("seed", SEEDS)
def test_calibration_beats_the_plain_loss_when_difficulty_varies(seed):
    rng = np.random.default_rng(seed)
    members, non_members, forget = population(rng, 2000, gain=0.3, spread=2.0)
    plain = build_attack("loss").run(members, non_members, forget, seed)
    calibrated = build_attack("calibrated").run(members, non_members, forget, seed)
    assert calibrated.power > plain.power + 0.1
    assert calibrated.power > 0.8
    assert calibrated.forget_score > 0.7  # the forget set is made of members here


def test_forgotten_samples_score_like_non_members():
    rng = np.random.default_rng(0)
    members, non_members, _ = population(rng, 2000, gain=0.3, spread=2.0)
    forgotten = population(rng, 2000, gain=0.3, spread=2.0)[1]  # non-member-like D_f
    result = build_attack("calibrated").run(members, non_members, forgotten, 0)
    assert result.forget_score < 0.3


def test_median_rule_keeps_the_earlier_score():
    rng = np.random.default_rng(0)
    members, non_members, forget = population(rng, 1000, gain=0.5)
    result = build_attack("median").run(members, non_members, forget, 3)
    assert result.forget_score == membership_attack_success(
        members.probs, non_members.probs, forget.probs, 3
    )


def test_calibrated_attack_refuses_missing_references():
    rng = np.random.default_rng(0)
    members, non_members, forget = population(rng, 100, gain=0.5)
    bare = ModelOutputs(forget.probs, forget.labels)
    with pytest.raises(ValueError, match="reference"):
        build_attack("calibrated").run(members, non_members, bare)


def test_best_threshold_separates_separable_values():
    threshold = best_threshold(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6]))
    assert 0.3 <= threshold < 0.5
    assert best_threshold(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == float("-inf")


def test_reference_confidences_average_the_models():
    x = np.zeros((2, 1))
    y = np.array([0, 1])

    def train(k):
        p = 0.5 if k == 0 else 0.25
        return lambda xs: np.tile([p, 1 - p], (len(xs), 1))

    (confidences,) = reference_confidences(train, 2, [(x, y)])
    logit = lambda p: np.log(p) - np.log(1 - p)  # noqa: E731
    expected = [(logit(0.5) + logit(0.25)) / 2, (logit(0.5) + logit(0.75)) / 2]
    np.testing.assert_allclose(confidences, expected, atol=1e-6)


def test_train_samples_keeps_a_seeded_draw_and_leaves_auxiliary_data(make_config):
    from fedforget.data import build_federation
    from fedforget.data.deletion import kept_train_indices
    from fedforget.data.sources import build_source

    config = make_config(data={"train_samples": 400}, deletion={"mode": "random", "share": 0.1})
    federation = build_federation(config)
    assert len(federation.train) == 400
    assert sum(len(i) for i in federation.client_indices) == 400
    bundle = build_source("digits").load()
    kept = kept_train_indices(bundle, config)
    np.testing.assert_array_equal(
        federation.train.y[~federation.is_deleted(np.arange(400))],
        bundle.train.y[kept][~federation.is_deleted(np.arange(400))],
    )
    assert len(np.setdiff1d(np.arange(len(bundle.train)), kept)) == len(bundle.train) - 400


def test_evaluator_reports_the_attack_and_its_power(make_config):
    from fedforget.data import build_federation
    from fedforget.metrics import Evaluator
    from fedforget.models import build_model

    federation = build_federation(make_config(deletion={"mode": "random", "share": 0.1}))
    model = build_model("lenet5", 10, 1, 8)
    with pytest.raises(UnknownAttackError):
        Evaluator(federation, attack="nope")
    evaluator = Evaluator(federation)
    metrics = evaluator.evaluate(model)
    assert evaluator.attack_name == "loss" and 0.0 <= metrics.mia_power <= 1.0
    evaluator.set_reference([np.zeros(len(y)) for _, y in evaluator.attack_sets()])
    assert evaluator.attack_name == "calibrated"
    assert 0.0 <= evaluator.evaluate(model).mia_power <= 1.0
    median = Evaluator(federation, attack="median")
    assert median.evaluate(model).mia_success == membership_attack_success(
        median._probs(model, median.retain),
        median._probs(model, federation.test),
        median._probs(model, median.forget),
        median.seed,
    )


def noisy_outputs(rng, n, gain):
    """Outputs whose loss is the sample's difficulty less ``gain``, off by noise: a model's
    confidence on an unseen sample is the references' only on average."""
    difficulty = rng.exponential(2.0, n) + 0.01
    labels = rng.integers(0, CLASSES, n)
    loss = np.maximum(difficulty - gain + rng.normal(0, 0.2, n), 0.001)
    reference = scaled_confidence(softmax_with_loss(difficulty, labels), labels)
    return ModelOutputs(softmax_with_loss(loss, labels), labels, reference)


@pytest.mark.parametrize("seed", SEEDS)
def test_calibrated_scores_an_unseen_forget_set_at_its_false_positive_rate(seed):
    """An unseen D_f scores about the fixed false-positive rate, a member D_f far above it."""
    rng = np.random.default_rng(seed)
    members, non_members = noisy_outputs(rng, 4000, 0.3), noisy_outputs(rng, 4000, 0.0)
    attack = build_attack("calibrated")
    unseen = attack.run(members, non_members, noisy_outputs(rng, 4000, 0.0), seed)
    remembered = attack.run(members, non_members, noisy_outputs(rng, 4000, 0.3), seed)
    assert abs(unseen.forget_score - FORGET_FALSE_POSITIVE_RATE) < 0.03
    assert remembered.forget_score > FORGET_FALSE_POSITIVE_RATE + 0.2
