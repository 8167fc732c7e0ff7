"""Membership inference, divergences and the evaluator."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedforget.attacks import entropy, membership_attack_success
from fedforget.data import build_federation
from fedforget.metrics import Evaluator, jensen_shannon, weight_distance
from fedforget.models import build_model


def _probs(rng: np.random.Generator, n: int, confidence: float) -> np.ndarray:
    """Rows with ``confidence`` on a random class and the rest spread evenly."""
    probs = np.full((n, 10), (1 - confidence) / 9)
    probs[np.arange(n), rng.integers(0, 10, n)] = confidence
    return probs


def test_entropy_of_uniform_and_one_hot():
    assert math.isclose(entropy(np.full((1, 4), 0.25))[0], math.log(4), rel_tol=1e-6)
    assert entropy(np.eye(3))[0] < 1e-9


def test_mia_calls_memorised_targets_members_and_unseen_targets_non_members():
    rng = np.random.default_rng(0)
    members = _probs(rng, 2000, 0.99)
    non_members = _probs(rng, 2000, 0.9)
    memorised = _probs(rng, 500, 0.999)
    forgotten = _probs(rng, 500, 0.5)
    assert membership_attack_success(members, non_members, memorised) > 0.95
    assert membership_attack_success(members, non_members, forgotten) < 0.05


def test_mia_scores_data_like_the_pool_near_one_half():
    rng = np.random.default_rng(1)
    confidences = rng.uniform(0.5, 1.0, 6000)
    pool = np.stack([_probs(rng, 1, c)[0] for c in confidences])
    score = membership_attack_success(pool[:2000], pool[2000:4000], pool[4000:])
    assert 0.4 < score < 0.6


def test_jensen_shannon_bounds():
    p = np.eye(4)
    assert jensen_shannon(p, p) < 1e-9
    assert math.isclose(jensen_shannon(p, np.roll(p, 1, axis=1)), math.log(2), rel_tol=1e-6)


def test_weight_distance_counts_every_parameter():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            pb.copy_(pa + 1.0)
    assert math.isclose(weight_distance(a, b), math.sqrt(8), rel_tol=1e-6)


def test_evaluator_fills_mode_specific_metrics(make_config):
    backdoor = build_federation(make_config())
    model = build_model("lenet5", 10, 1, 8)
    metrics = Evaluator(backdoor).evaluate(model)
    assert metrics.backdoor_success is not None and metrics.forget_test_accuracy is None
    assert 0 <= metrics.mia_success <= 1

    by_class = build_federation(make_config(deletion={"mode": "class", "forget_classes": [2]}))
    metrics = Evaluator(by_class).evaluate(model)
    assert metrics.backdoor_success is None and metrics.forget_test_accuracy is not None
