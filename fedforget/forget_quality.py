"""Forget quality: can an attacker tell unlearned models from retrained ones, sample by sample?

The test of the NeurIPS 2023 machine-unlearning challenge (Triantafillou et al., "Are we
making progress in unlearning? Findings from the first NeurIPS unlearning competition",
2024, section 3). For every sample of D_f it takes the *logit-scaled confidence* of the
sample's label,

    phi(p) = log(p_y) - log(1 - p_y),

under each of K unlearned models and K retrained models (trained from different seeds on the
same data). An attacker who sees one model's phi and must say "unlearned" or "retrained"
thresholds it; each threshold t (and direction) has a false positive rate FPR and a false
negative rate FNR, and an (epsilon, delta)-unlearning guarantee bounds both:

    epsilon_x = max over attacks of max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR))

(the privacy region of Kairouz et al. 2015). The sample's score is ``2 / 2**n`` where
``n = floor(epsilon_x / 0.5) + 1`` (buckets of half a nat: epsilon below 0.5 scores 1, each
further half nat halves it), and the forget quality F is the mean over D_f: 1 when no
threshold tells the two sets of models apart, near 0 when every one does.

Our choices where the paper's setting differs (it trains 512 models per side):

- with K models per side the rates move in steps of 1/K, so two sets of retrained models
  (different seeds) already score below 1: :func:`forget_quality` of retrain against retrain
  is the noise floor every method is read against;
- an empty rate (no model on the wrong side) is floored at ``1 / (2 K)``: epsilon is then at
  most ``log(2 K - 1)`` (the paper caps epsilon as well; with 8 models, log 15 = 2.7 nats);
- ``delta`` is 0 (the paper's delta is small beside the rates' 1/K steps here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BUCKET = 0.5
"""Width of an epsilon bucket, in nats."""
CLIP = 1e-12


def logit_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y) - log(1 - p_y)`` of each row's label (probabilities clipped away from 0, 1)."""
    chosen = probs[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    chosen = np.clip(chosen.astype(np.float64), CLIP, 1.0 - CLIP)
    return np.log(chosen) - np.log1p(-chosen)


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = 0.0) -> float:
    """The epsilon of the best threshold attack on one sample's two sets of confidences.

    Parameters
    ----------
    unlearned, retrained : np.ndarray
        The sample's logit-scaled confidence under each unlearned and each retrained model.
    delta : float
        The guarantee's delta.
    """
    count = min(len(unlearned), len(retrained))
    floor = 1.0 / (2 * count)
    values = np.unique(np.concatenate([unlearned, retrained]))
    cuts = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2, [np.inf]])
    best = 0.0
    for cut in cuts:
        # attack "unlearned when above the cut"; the reverse direction swaps the two rates
        fnr = float(np.mean(unlearned <= cut))
        fpr = float(np.mean(retrained > cut))
        for a, b in ((fpr, fnr), (1.0 - fpr, 1.0 - fnr)):
            a, b = max(a, floor), max(b, floor)
            for numerator, denominator in ((1.0 - delta - a, b), (1.0 - delta - b, a)):
                if numerator > 0:
                    best = max(best, math.log(numerator / denominator))
    return best


def epsilon_score(epsilon: float) -> float:
    """``2 / 2**n`` with ``n = floor(epsilon / BUCKET) + 1``: 1 below half a nat."""
    return 2.0 / 2 ** (math.floor(epsilon / BUCKET) + 1)


@dataclass(frozen=True)
class ForgetQuality:
    """The forget quality F of one set of models against another, with its parts.

    Attributes
    ----------
    score : float
        F, the mean per-sample score (1: indistinguishable).
    epsilons : np.ndarray
        Each sample's epsilon.
    models : int
        Models per side.
    """

    score: float
    epsilons: np.ndarray
    models: int

    def to_json(self) -> dict[str, float]:
        """The score, the models per side and the epsilons' mean and median."""
        return {
            "score": self.score,
            "models": self.models,
            "epsilon_mean": float(np.mean(self.epsilons)),
            "epsilon_median": float(np.median(self.epsilons)),
            "samples": len(self.epsilons),
        }


def forget_quality(unlearned: np.ndarray, retrained: np.ndarray) -> ForgetQuality:
    """F of ``unlearned`` against ``retrained`` confidences, each ``(models, samples)``.

    Raises
    ------
    ValueError
        When the two sides score different samples, or a side has fewer than 2 models.
    """
    unlearned, retrained = np.asarray(unlearned), np.asarray(retrained)
    if unlearned.shape[1:] != retrained.shape[1:] or unlearned.ndim != 2:
        raise ValueError("both sides must score the same samples: arrays (models, samples)")
    if min(len(unlearned), len(retrained)) < 2:
        raise ValueError("forget quality needs at least 2 models on each side")
    epsilons = np.array(
        [example_epsilon(unlearned[:, i], retrained[:, i]) for i in range(unlearned.shape[1])]
    )
    score = float(np.mean([epsilon_score(e) for e in epsilons]))
    return ForgetQuality(score, epsilons, min(len(unlearned), len(retrained)))
