"""Is a model worth comparing? Convergence before the deletion, divergence, chance level.

A comparison with retraining means something only when both models learned: a federation
that never left chance has nothing to forget, a retrain whose loss exploded is no reference,
and a federation whose accuracy still climbs at the deletion round is compared with a retrain
at another point of a moving trajectory. Each finding is one line for the user and a named,
failing check in ``compare``/``sweep``; the results they concern are not shown as results.

Thresholds (our choices, for 10-class image tasks and federations of 3-1,000 clients):

- *chance*: the share of the test set's most frequent class (a model that always answers it);
  a model is *near chance* below chance + ``NEAR_CHANCE`` (10 pt);
- *not converged*: the test accuracy of the last ``CONVERGENCE_ROUNDS`` (3) rounds before the
  deletion spans more than ``CONVERGENCE_SPAN`` (2 pt), the issue's rule of thumb;
- *diverged*: a non-finite training loss, or a round's loss above ``LOSS_EXPLOSION`` (10x)
  the first round's, or a final model near chance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NEAR_CHANCE = 0.10
CONVERGENCE_ROUNDS = 3
CONVERGENCE_SPAN = 0.02
LOSS_EXPLOSION = 10.0


@dataclass(frozen=True)
class Finding:
    """Something that makes a model unfit for comparison: a name and one line."""

    name: str
    message: str


def chance_level(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class of ``labels``."""
    if len(labels) == 0:
        return 0.0
    return float(np.bincount(np.asarray(labels, dtype=np.int64)).max() / len(labels))


def near_chance(accuracy: float, chance: float) -> bool:
    """Whether ``accuracy`` is within :data:`NEAR_CHANCE` of the chance level (or NaN)."""
    return not math.isfinite(accuracy) or accuracy < chance + NEAR_CHANCE


def not_learned(what: str, accuracy: float, chance: float) -> Finding | None:
    """``what`` (e.g. "original model") near chance: nothing to forget, or nothing learned."""
    if not near_chance(accuracy, chance):
        return None
    return Finding(
        "not learned",
        f"{what} at {accuracy:.1%} test accuracy (chance {chance:.1%}): it learned nothing, "
        "so there is nothing to forget; raise --rounds or --local-epochs, or lower --lr",
    )


def not_converged(accuracies: Sequence[float], deletion_round: int) -> Finding | None:
    """The test accuracies of the rounds up to the deletion still move (see the module)."""
    last = [a for a in accuracies[-CONVERGENCE_ROUNDS:] if math.isfinite(a)]
    if len(last) < CONVERGENCE_ROUNDS:
        return None
    span = max(last) - min(last)
    if span <= CONVERGENCE_SPAN:
        return None
    return Finding(
        "not converged",
        f"test accuracy moved {span:.1%} over the {CONVERGENCE_ROUNDS} rounds up to the "
        f"deletion round {deletion_round} ({', '.join(f'{a:.1%}' for a in last)}): the "
        "comparison with retraining is taken on a moving trajectory; delete later "
        "(--deletion-round) with more --rounds",
    )


def diverged(what: str, losses: Sequence[float], accuracy: float, chance: float) -> Finding | None:
    """``what`` (e.g. "retrain reference") diverged: its loss exploded or it sits at chance."""
    for number, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            return Finding("diverged", f"{what} diverged: training loss {loss} at round {number}")
    if losses and losses[0] > 0:
        worst = max(range(len(losses)), key=lambda i: losses[i])
        if losses[worst] > LOSS_EXPLOSION * losses[0]:
            return Finding(
                "diverged",
                f"{what} diverged: training loss {losses[worst]:.4g} at round {worst + 1} "
                f"(round 1: {losses[0]:.4g}), test accuracy {accuracy:.1%}",
            )
    if near_chance(accuracy, chance):
        return Finding(
            "diverged",
            f"{what} at {accuracy:.1%} test accuracy (chance {chance:.1%}): it is no reference",
        )
    return None


def run_findings(
    rounds: Sequence[dict], before_accuracy: float, chance: float, deletion_round: int
) -> list[str]:
    """The lines ``simulate`` warns with: the federation near chance before the deletion, or
    its test accuracy still moving over the rounds up to it (``rounds``: the run's rows,
    ``phase`` ``federated`` with ``round`` and ``test_accuracy``)."""
    trajectory = [
        float(row["test_accuracy"])
        for row in rounds
        if row.get("phase") == "federated" and row.get("round", 0) <= deletion_round
    ]
    findings = [
        not_learned("the model before the deletion", before_accuracy, chance),
        not_converged(trajectory, deletion_round),
    ]
    return [finding.message for finding in findings if finding is not None]
