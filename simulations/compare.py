"""``fedforget compare``: every strategy branched from one checkpoint, one table.

The federation trains once, up to the deletion round, with the deletion requests arriving as
in ``simulate``; that checkpoint is saved, and every strategy then carries out the *same*
deletion from it, inside the same Flower run (same clients, same seed). Each branch is named
in its messages, so a client's deletion state in one branch (D_f dropped) does not leak into
the next (see :func:`fedforget.clients.app._state_key`). ``retrain`` always runs first: it is
the reference of JSD, L2, attention discrepancy, similarity and speedup.

Each row describes the model right after the strategy's deletion step (its unlearning, plus
the recovery relay for methods that include it), the point where paper 000 Table II and
paper 004 Table 1 measure; the FedAvg rounds after the deletion are not run.

AIN (paper 002 Eq. 10) is every row's relearn time over the retrained model's: SGD steps
(lr 0.01, batch 32, cap 100) of fine-tuning on a seeded subset of at most 512 D_f samples
until the model recognises ``RELEARN_ALPHA`` (90 %) as many of them as the original did.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget import protocol as P
from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import Federation, build_federation
from fedforget.metrics import (
    ATTENTION_SAMPLES,
    RELEARN_ALPHA,
    RELEARN_SAMPLES,
    Evaluator,
    PhaseMetrics,
    anamnesis_index,
    attention_discrepancy,
    forgetting_rate,
    jensen_shannon,
    memory_retention_rate,
    relearn_steps,
    unlearning_score,
)
from fedforget.models import ClassifierModel
from fedforget.report import RunObserver
from fedforget.report.comparison import CSV_COLUMNS, ORIGINAL, markdown_table
from fedforget.report.observer import CheckpointObserver
from fedforget.server.app import default_out_dir, gan_factory, model_factory
from fedforget.simulations.runner import (
    check_run,
    check_strategies,
    run_on_simulation_engine,
)
from fedforget.strategies import FederatedUnlearning, build_strategy
from fedforget.strategies.registry import RETRAIN, strategy_names
from fedforget.training import load_numpy_state, predict_proba, resolve_device


@dataclass
class Comparison:
    """The outcome of ``fedforget compare``: one row per strategy, plus the original model."""

    rows: list[dict[str, Any]]
    out_dir: Path
    config: dict[str, Any]
    base_seconds: float = 0.0
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def row(self, strategy: str) -> dict[str, Any]:
        """The row of one strategy (or of ``original``)."""
        return next(r for r in self.rows if r["strategy"] == strategy)


def parse_strategies(text: str) -> list[str]:
    """``"distill,lau"`` or ``"all"`` -> registered names; unknown names are a ConfigError."""
    names = strategy_names() if text.strip() == "all" else [t.strip() for t in text.split(",")]
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        raise ConfigError("--strategies needs at least one strategy name")
    return names


def compare(
    config: SimulationConfig, strategies: list[str], display: RunObserver | None = None
) -> Comparison:
    """Run the comparison on Flower's simulation engine; write and return the results."""
    check_run(config)
    check_strategies(config, strategies)
    return run_on_simulation_engine(
        config, lambda grid: run_comparison(grid, config, strategies, display)
    )


class _Scorer:
    """Every column of the table for one model, given the original and the retrained one."""

    def __init__(self, federation: Federation, evaluator: Evaluator, device: torch.device):
        self.federation = federation
        self.evaluator = evaluator
        self.device = device
        rng = np.random.default_rng(0)
        forget = evaluator.forget
        pick = rng.choice(len(forget), min(len(forget), ATTENTION_SAMPLES), replace=False)
        self.forget_x = forget.x[np.sort(pick)]
        test = federation.test
        pick = rng.choice(len(test), min(len(test), ATTENTION_SAMPLES), replace=False)
        self.clean_x = test.x[np.sort(pick)]
        pick = np.sort(rng.choice(len(forget), min(len(forget), RELEARN_SAMPLES), replace=False))
        self.relearn_data = forget.subset(pick)
        self.relearn_target: float | None = None
        self.original: PhaseMetrics | None = None
        self.reference: ClassifierModel | None = None

    def set_original(self, model: ClassifierModel, metrics: dict[str, Any]) -> None:
        """The original model: its phase metrics and AIN's relearn target (alpha x its accuracy)."""
        self.original = PhaseMetrics(**{k: metrics[k] for k in PhaseMetrics.model_fields})
        if len(self.relearn_data):
            probs = predict_proba(model, self.relearn_data.x, self.device)
            accuracy = float((probs.argmax(axis=1) == self.relearn_data.y).mean())
            self.relearn_target = RELEARN_ALPHA * accuracy

    def relearn_steps(self, model: ClassifierModel) -> int | None:
        """Steps to relearn D_f (:func:`fedforget.metrics.relearn_steps`), once a target is set."""
        if self.relearn_target is None:
            return None
        data = self.relearn_data
        return relearn_steps(model, data.x, data.y, self.relearn_target, device=self.device)

    def metrics(self, model: ClassifierModel) -> dict[str, Any]:
        row = self.evaluator.evaluate(model).model_dump()
        if self.original is None or self.reference is None:
            return row
        distances = self.evaluator.divergence(model, self.reference)
        forget_attention = attention_discrepancy(model, self.reference, self.forget_x, self.device)
        clean_attention = attention_discrepancy(model, self.reference, self.clean_x, self.device)
        ours = predict_proba(model, self.forget_x, self.device)
        theirs = predict_proba(self.reference, self.forget_x, self.device)
        before = self.original
        row.update(
            jsd=distances["jsd"],
            l2=distances["l2"],
            jsd_forget=distances.get("jsd_forget"),
            attention_discrepancy=(forget_attention + clean_attention) / 2,
            attention_discrepancy_forget=forget_attention,
            attention_discrepancy_clean=clean_attention,
            us=unlearning_score(row["retain_test_accuracy"], _forgotten_accuracy(row)),
            fr=forgetting_rate(before.forget_accuracy or 0.0, row["forget_accuracy"] or 0.0),
            mrr=memory_retention_rate(before.retain_accuracy, row["retain_accuracy"]),
            similarity=1.0 - jensen_shannon(ours, theirs) / math.log(2),
            relearn_steps=self.relearn_steps(model),
        )
        return row


def _forgotten_accuracy(row: dict[str, Any]) -> float:
    """The accuracy US counts as forgotten: D_tf (class), backdoor success, else D_f."""
    for key in ("forget_test_accuracy", "backdoor_success", "forget_accuracy"):
        if row.get(key) is not None:
            return float(row[key])
    return 0.0


def run_comparison(
    grid: Grid,
    config: SimulationConfig,
    strategies: list[str],
    display: RunObserver | None = None,
) -> Comparison:
    """Train to the deletion round once, then branch every strategy from that checkpoint."""
    out_dir = default_out_dir(config.model_copy(update={"strategy": "compare"}))
    out_dir.mkdir(parents=True, exist_ok=True)
    federation = build_federation(config)
    build = model_factory(config, federation)
    torch.manual_seed(config.seed)
    initial = ArrayRecord(build().state_dict())
    device = resolve_device(config.resources.server_device)
    names = [RETRAIN, *(s for s in strategies if s != RETRAIN)]
    branches = {name: _branch(config, name, build, federation, device, display) for name in names}
    started = time.perf_counter()
    base = _branch(config, "", build, federation, device, display)
    base.keeps_history = any(b.keeps_history for b in branches.values())
    base.trains_generator = any(b.trains_generator for b in branches.values())
    base.begin(initial)
    checkpoint = base.run_rounds(
        grid, initial, config.deletion.round, "federated", handle_deletions=False
    ).arrays
    base_seconds = time.perf_counter() - started
    if not base.pending_deletions:
        raise ConfigError("no client reported a deletion request by the deletion round")
    _save(checkpoint, out_dir / "checkpoint.pt")
    if base.gan_arrays is not None:  # the clients' GAN that MuGAN draws from
        _save(base.gan_arrays, out_dir / "generator.pt")
    scorer = _Scorer(federation, Evaluator(federation, device, config.seed), device)
    original = load_numpy_state(build(), _numpy(checkpoint))
    rows = [{"strategy": ORIGINAL, **scorer.metrics(original)}]
    scorer.set_original(original, rows[0])
    details: dict[str, dict[str, Any]] = {}
    for name, strategy in branches.items():
        strategy.take_over(base)
        arrays = strategy.carry_out_deletion(grid, config.deletion.round, checkpoint)
        model = load_numpy_state(build(), _numpy(arrays))
        if name == RETRAIN:
            scorer.reference = model
        seconds = strategy.deletion.unlearning_seconds + strategy.deletion.recovery_seconds
        rows.append({"strategy": name, **scorer.metrics(model), "seconds": seconds})
        details[name] = _details(strategy)
        _save(arrays, out_dir / "models" / f"{name}.pt")
    rows[0] = {"strategy": ORIGINAL, **scorer.metrics(original)}  # now with its distances
    _fill_speedups(rows)
    _fill_anamnesis(rows)
    result = Comparison(rows, out_dir, json.loads(config.to_json()), base_seconds, details)
    write_comparison(result)
    return result


def _branch(
    config: SimulationConfig,
    name: str,
    build,
    federation: Federation,
    device: torch.device,
    display: RunObserver | None,
) -> FederatedUnlearning:
    message_config = {P.RUN_CONFIG_KEY: config.to_json(), P.BRANCH: name}
    return build_strategy(
        config.model_copy(update={"strategy": name or RETRAIN}),
        build_model=build,
        num_classes=federation.num_classes,
        observer=CheckpointObserver(display, name),
        device=device,
        message_config=message_config,
        build_gan=gan_factory(config, federation),
        image_shape=federation.train.x.shape[1:],
    )


def _details(strategy: FederatedUnlearning) -> dict[str, Any]:
    record = strategy.deletion
    needs = sorted(strategy.unlearner.needs) if strategy.unlearner else ["rounds"]
    return {
        "needs": needs,
        "unlearning_seconds": record.unlearning_seconds,
        "recovery_seconds": record.recovery_seconds,
        "relay_hops": record.relay_hops,
        "forget_samples": record.forget_samples,
        "forget_samples_received": record.forget_samples_received,
        "retain_samples": record.retain_samples,
        "history_bytes": record.history_bytes,
        "client_training_calls": record.client_training_calls,
        "generator_client_seconds": record.generator_client_seconds,
        "generator_bytes": record.generator_bytes,
    }


def _fill_speedups(rows: list[dict[str, Any]]) -> None:
    retrain = next(r for r in rows if r["strategy"] == RETRAIN)
    for row in rows:
        if row["strategy"] == ORIGINAL:
            continue
        row.setdefault("jsd", 0.0)
        row["speedup_vs_retrain"] = retrain["seconds"] / row["seconds"] if row["seconds"] else None


def _fill_anamnesis(rows: list[dict[str, Any]]) -> None:
    """AIN of every row: its relearn steps over the retrained model's (paper 002 Eq. 10)."""
    retrain = next(r for r in rows if r["strategy"] == RETRAIN).get("relearn_steps")
    for row in rows:
        steps = row.get("relearn_steps")
        row["ain"] = None if steps is None or not retrain else anamnesis_index(steps, retrain)


def _numpy(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in arrays.items()}


def _save(arrays: ArrayRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arrays.to_torch_state_dict(), path)


def write_comparison(result: Comparison) -> None:
    """Write ``compare.csv``, ``compare.json``, ``compare.md`` and ``compare.png``."""
    out = result.out_dir
    with (out / "compare.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})
    payload = {
        "rows": result.rows,
        "details": result.details,
        "base_seconds": result.base_seconds,
        "config": result.config,
    }
    (out / "compare.json").write_text(json.dumps(payload, indent=2))
    (out / "compare.md").write_text(markdown_table(result.rows) + "\n")
    from fedforget.report.plot import plot_comparison

    plot_comparison(result.rows, out / "compare.png")
