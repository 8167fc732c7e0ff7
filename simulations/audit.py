"""``fedforget audit``: the field's forget-quality test on a sweep scenario.

For one scenario x partition (one data seed: the same federation and D_f throughout), the
audit trains the federation K times from other run seeds (other initial weights and batch
orders), and each time carries out the deletion with the chosen methods, ``none`` and two
retrains (:mod:`fedforget.simulations.compare`, ``reference_seeds`` 2). It then scores every
D_f sample's logit-scaled confidence under each model and reports the forget quality F
(:mod:`fedforget.forget_quality`) of each method against the first retrains, beside the
retrain-vs-retrain noise floor (the second retrains against the first) and ``none``.

A scenario's federation is shrunk for the audit (:data:`AUDIT_SIZES`): 4K + K models must
train within about an hour on 2 cores. What that costs in fidelity is said per scenario.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedforget.config import SimulationConfig, merge_sections, validate_config
from fedforget.data import build_federation
from fedforget.forget_quality import ForgetQuality, forget_quality, logit_confidence
from fedforget.server.app import model_factory
from fedforget.simulations.branching import Comparison, reference_band
from fedforget.simulations.sweep import NONE, PARTITIONS, RETRAIN, SCENARIOS
from fedforget.training import load_numpy_state, predict_proba

DEFAULT_MODELS = 8
AUDIT_SIZES: dict[str, dict[str, Any]] = {
    # A style client among 10 of 600 MNIST samples each; 6 rounds, deleted after round 4.
    # Fidelity: a fifth of the default's data and rounds (the original reads negatives less).
    "style-client": {
        "clients": 10,
        "data": {"train_samples": 6000},
        "train": {"rounds": 5},
        "deletion": {"round": 4},
    },
    # The overfitting federation of overfit-20, as there: fewer rounds (11, deleted after 10).
    "mislabeled": {"train": {"rounds": 11}, "deletion": {"round": 10}},
    # Already small (20 clients of 100 samples): fewer rounds (11, deleted after 10).
    "overfit-20": {"train": {"rounds": 11}, "deletion": {"round": 10}},
}
"""Per scenario: overrides that shrink its federation for the audit."""


@dataclass
class AuditResult:
    """Forget quality per method, the noise floor and ``none``, with the runs behind them."""

    scenario: str
    partition: str
    data_seed: int
    models: int
    scores: dict[str, ForgetQuality] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "partition": self.partition,
            "data_seed": self.data_seed,
            "models": self.models,
            "seconds": self.seconds,
            "forget_quality": {name: q.to_json() for name, q in self.scores.items()},
        }


CompareFn = Callable[[SimulationConfig, list[str], int], Comparison]
"""``compare(config, strategies, after_rounds)``."""


def audit_config(
    base: SimulationConfig, scenario: str, partition: str, data_seed: int, run: int, out: Path
) -> SimulationConfig:
    """The configuration of the audit's ``run``-th training: the scenario (shrunk), the
    partition, the data seed fixed, a run seed of its own, two reference retrains."""
    values = json.loads(base.to_json())
    for override in (SCENARIOS[scenario], AUDIT_SIZES.get(scenario, {}), PARTITIONS[partition]):
        values = merge_sections(values, override)
    values["data"]["seed"] = data_seed
    values.update(
        seed=data_seed + 1 + run,
        reference="none",
        reference_seeds=2,
        out=str(out / "runs" / f"run{run}"),
    )
    return validate_config(values)


def run_audit(
    base: SimulationConfig,
    scenario: str,
    partition: str,
    strategies: list[str],
    out: Path,
    run_compare: CompareFn,
    *,
    data_seed: int = 0,
    models: int = DEFAULT_MODELS,
    report: Callable[[str], None] = lambda _line: None,
) -> AuditResult:
    """Train ``models`` federations, score D_f under every model, compare the sets."""
    import time

    started = time.perf_counter()
    first, second = reference_band(2)
    names = [RETRAIN, *(s for s in strategies if s not in (RETRAIN, NONE)), NONE]
    confidences: dict[str, list[np.ndarray]] = {}
    forget = None
    for run in range(models):
        config = audit_config(base, scenario, partition, data_seed, run, out)
        result = run_compare(config, names, 0)
        federation = build_federation(config)
        if forget is None:
            forget = federation.forget_set()
        build = model_factory(config, federation)
        for name in [first, second, *names[1:]]:
            state = torch.load(result.out_dir / "models" / f"{name}.pt", weights_only=True)
            model = load_numpy_state(build(), {k: v.numpy() for k, v in state.items()})
            probs = predict_proba(model, forget.x)
            confidences.setdefault(name, []).append(logit_confidence(probs, forget.y))
        report(f"audit {scenario} on {partition}: run {run + 1}/{models} done")
    retrained = np.stack(confidences[first])
    result = AuditResult(scenario, partition, data_seed, models)
    result.scores[FLOOR] = forget_quality(np.stack(confidences[second]), retrained)
    for name in names[1:]:
        result.scores[name] = forget_quality(np.stack(confidences[name]), retrained)
    result.seconds = time.perf_counter() - started
    write_audit(result, out)
    return result


def write_audit(result: AuditResult, out: Path) -> None:
    """``audit.json`` and ``audit.md`` of one scenario x partition in ``out``."""
    write_audits([result], out)


def write_audits(results: list[AuditResult], out: Path) -> None:
    """``audit.json`` and ``audit.md`` of several audits in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    payload = [result.to_json() for result in results]
    (out / "audit.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "audit.md").write_text(audit_markdown(results) + "\n")


FLOOR = "retrain vs retrain (noise floor)"
FLOOR_MARGIN = 0.05
"""A method is as indistinguishable from retraining as retraining itself when its F lies
within this of the noise floor's."""


def audit_markdown(results: list[AuditResult]) -> str:
    """F per method beside the noise floor, one line per audited scenario and partition."""
    lines = [
        "| scenario | partition | models per side | against retrain | F | mean epsilon | "
        f"within floor - {FLOOR_MARGIN} |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for result in results:
        floor = result.scores[FLOOR].score
        for name, quality in result.scores.items():
            summary = quality.to_json()
            verdict = (
                "-" if name == FLOOR else ("yes" if quality.score >= floor - FLOOR_MARGIN else "no")
            )
            lines.append(
                f"| {result.scenario} | {result.partition} | {result.models} | {name} | "
                f"{summary['score']:.3f} | {summary['epsilon_mean']:.2f} | {verdict} |"
            )
    return "\n".join(lines)
