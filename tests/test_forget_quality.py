"""The forget-quality test: per-sample epsilon of the best threshold attack, bucketed score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedforget.forget_quality import (
    epsilon_score,
    example_epsilon,
    forget_quality,
    logit_confidence,
)
from fedforget.report.sanity import (
    chance_level,
    diverged,
    near_chance,
    not_converged,
    not_learned,
    run_findings,
)


def test_logit_confidence_is_the_labels_log_odds():
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.0, 1.0]])
    values = logit_confidence(probs, np.array([0, 0, 0]))
    assert values[0] == pytest.approx(0.0)
    assert values[1] == pytest.approx(math.log(9))
    assert np.isfinite(values[2]) and values[2] < -20  # clipped, not -inf


def test_separated_models_give_the_largest_epsilon_and_equal_ones_none():
    k = 8
    assert example_epsilon(np.arange(k) + 100.0, np.arange(k)) == pytest.approx(math.log(2 * k - 1))
    assert example_epsilon(np.zeros(k), np.zeros(k)) == pytest.approx(0.0)


def test_the_score_halves_each_half_nat():
    assert [epsilon_score(e) for e in (0.0, 0.49, 0.5, 1.2, 2.7)] == [1, 1, 0.5, 0.25, 0.03125]


def test_forget_quality_orders_indistinguishable_shifted_and_separated_sets():
    rng = np.random.default_rng(0)
    retrained = rng.normal(0.0, 1.0, (8, 400))
    same = forget_quality(rng.normal(0.0, 1.0, (8, 400)), retrained).score
    shifted = forget_quality(rng.normal(1.0, 1.0, (8, 400)), retrained).score
    apart = forget_quality(rng.normal(5.0, 1.0, (8, 400)), retrained).score
    assert same > shifted + 0.05 > apart + 0.05
    assert apart == pytest.approx(epsilon_score(math.log(15)))
    with pytest.raises(ValueError, match="same samples"):
        forget_quality(retrained[:, :10], retrained)
    with pytest.raises(ValueError, match="at least 2 models"):
        forget_quality(retrained[:1], retrained[:1])


def test_chance_and_not_learned():
    labels = np.array([0] * 6 + [1] * 4)
    assert chance_level(labels) == pytest.approx(0.6)
    assert near_chance(0.65, 0.6) and not near_chance(0.75, 0.6) and near_chance(float("nan"), 0.1)
    assert not_learned("the model", 0.101, 0.1).name == "not learned"
    assert not_learned("the model", 0.95, 0.1) is None


def test_a_trajectory_that_still_moves_is_not_converged():
    found = not_converged([0.5, 0.9, 0.95, 0.97], deletion_round=4)
    assert found is not None and "2.0%" not in found.message and "moved 7.0%" in found.message
    assert not_converged([0.5, 0.97, 0.975, 0.97], deletion_round=4) is None
    assert not_converged([0.5, 0.97], deletion_round=2) is None  # too few rounds to tell


def test_a_reference_whose_loss_explodes_or_sits_at_chance_diverged():
    assert diverged("retrain", [2.3, 0.5, 0.3], 0.98, 0.1) is None
    exploded = diverged("retrain", [2.3, 498.9, 1e3], 0.4, 0.1)
    assert (
        exploded is not None and "498.9" not in exploded.message and "round 3" in exploded.message
    )
    assert "nan" in diverged("retrain", [2.3, float("nan")], 0.98, 0.1).message
    assert "chance" in diverged("retrain", [2.3, 2.3], 0.102, 0.1).message


def test_simulate_warns_of_a_federation_near_chance_or_still_climbing():
    rows = [
        {"phase": "federated", "round": r, "test_accuracy": a}
        for r, a in enumerate([0.3, 0.6, 0.8, 0.9], start=1)
    ] + [{"phase": "reference", "round": 4, "test_accuracy": 0.1}]
    (climbing,) = run_findings(rows, 0.9, 0.1, deletion_round=4)
    assert "delete later" in climbing and "moved 30.0%" in climbing
    assert run_findings([*rows[:3], {**rows[1], "round": 4}], 0.6, 0.1, 3)[0].startswith("test")
    lines = run_findings(rows, 0.11, 0.1, deletion_round=2)  # near chance, too early to tell
    assert len(lines) == 1 and "nothing to forget" in lines[0]
    settled = [{"phase": "federated", "round": r, "test_accuracy": 0.97} for r in (1, 2, 3)]
    assert run_findings(settled, 0.97, 0.1, deletion_round=3) == []
