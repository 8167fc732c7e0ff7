"""``fedforget compare``: every strategy branched from one checkpoint, one table.

The federation trains once, up to the deletion round, with the deletion requests arriving as
in ``simulate``; that checkpoint is saved, and every strategy then carries out the *same*
deletion from it, inside the same Flower run (same clients, same seed). Each branch is named
in its messages, so a client's deletion state in one branch (D_f dropped) does not leak into
the next (see :func:`fedforget.clients.app._state_key`). ``retrain`` always runs first: it is
the reference of JSD, L2, attention discrepancy, similarity and speedup.

Each row describes the model right after the strategy's deletion step (its unlearning, plus
the recovery relay for methods that include it), the point where paper 000 Table II and
paper 004 Table 1 measure. Then each branch continues ``after_rounds`` FedAvg rounds
(default :data:`DEFAULT_AFTER_ROUNDS`) on the remaining data, and the row also holds the
metrics after them (``end.*``): whether the forgetting lasts once training goes on.

AIN (paper 002 Eq. 10) is every row's relearn time over the retrained model's: SGD steps
(lr 0.01, batch 32, cap 100) of fine-tuning on a seeded subset of at most 512 D_f samples
until the model recognises ``RELEARN_ALPHA`` (90 %) as many of them as the original did.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedforget.attacks_reference import attach_references
from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import Federation, build_federation, resolve_training
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
from fedforget.report.comparison import (
    CSV_COLUMNS,
    ORIGINAL,
    durability_table,
    markdown_table,
    phase_columns,
)
from fedforget.report.sanity import chance_level, diverged, not_converged, not_learned
from fedforget.server.app import gan_factory, model_factory
from fedforget.simulations.branching import (
    BranchTask,
    Comparison,
    band_member,
    check_single_deletion,
    is_reference,
    run_branches,
    save_arrays,
    write_rows,
)
from fedforget.simulations.runner import (
    check_run,
    check_strategies,
    mode_refusal,
    run_on_simulation_engine,
)
from fedforget.strategies import FederatedUnlearning, build_strategy
from fedforget.strategies.registry import RETRAIN, strategy_names
from fedforget.training import accuracy, load_numpy_state, predict_proba, resolve_device

DEFAULT_AFTER_ROUNDS = 3
"""FedAvg rounds each branch continues after its deletion unless told otherwise (issue 17:
methods that forget at once can revert within a few rounds, as FedOSD reports)."""


def parse_strategies(text: str) -> list[str]:
    """``"distill,lau"`` or ``"all"`` -> registered names; unknown names are a ConfigError."""
    names = strategy_names() if text.strip() == "all" else [t.strip() for t in text.split(",")]
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        raise ConfigError("--strategies needs at least one strategy name")
    return names


def compare(
    config: SimulationConfig,
    strategies: list[str],
    display: RunObserver | None = None,
    after_rounds: int = DEFAULT_AFTER_ROUNDS,
) -> Comparison:
    """Run the comparison on Flower's simulation engine; write and return the results.

    ``after_rounds``: FedAvg rounds each branch continues after its deletion (see
    :func:`fedforget.simulations.branching.run_branches`).
    """
    check_run(config)
    check_single_deletion(config)
    check_strategies(config, strategies)
    return run_on_simulation_engine(
        config, lambda grid: run_comparison(grid, config, strategies, display, after_rounds)
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
    after_rounds: int = DEFAULT_AFTER_ROUNDS,
) -> Comparison:
    """Train to the deletion round once, then branch every strategy from that checkpoint.

    A strategy defined for other deletion modes (client removal only, say) does not run: its
    row states the refusal (``refused``) after the others.
    """
    refused = {name: mode_refusal(config, name) for name in strategies}
    refused = {name: reason for name, reason in refused.items() if reason is not None}
    runnable = [name for name in strategies if name not in refused]
    task = ClassifierBranches(config, refused)
    return run_branches(grid, task, runnable, display, after_rounds)


class ClassifierBranches(BranchTask):
    """``fedforget compare``: classifier branches, scored by :class:`_Scorer`."""

    label = "compare"

    def __init__(self, config: SimulationConfig, refused: dict[str, str] | None = None) -> None:
        super().__init__(resolve_training(config))  # the run's values, derived once here
        self.refused = refused or {}  # strategy -> why it does not run this deletion mode
        self.federation = build_federation(config)
        self.build = model_factory(config, self.federation)
        self.device = resolve_device(config.resources.server_device)
        self.scorer: _Scorer | None = None
        self.original: ClassifierModel | None = None

    def initial_arrays(self) -> ArrayRecord:
        torch.manual_seed(self.config.seed)
        return ArrayRecord(self.build().state_dict())

    def strategy(self, name: str, branch: str | None, observer: RunObserver) -> FederatedUnlearning:
        strategy, train_seed = band_member(name, self.config.seed)
        return build_strategy(
            self.config.model_copy(update={"strategy": strategy}),
            build_model=self.build,
            num_classes=self.federation.num_classes,
            observer=observer,
            device=self.device,
            build_gan=gan_factory(self.config, self.federation),
            image_shape=self.federation.train.x.shape[1:],
            validation=self.federation.validation,
            branch=branch,
            train_seed=train_seed,
        )

    def round_score(self, arrays: ArrayRecord) -> float:
        return accuracy(self._model(arrays), self.federation.test, self.device)

    def sanity(
        self, rows: list[dict[str, Any]], trajectory: list[float], losses: dict[str, list[float]]
    ) -> list[dict[str, str]]:
        """The original learned and converged; no reference diverged."""
        chance = chance_level(self.federation.test.y)
        original = rows[0]
        found = [
            (ORIGINAL, not_learned("the original model", original["test_accuracy"], chance)),
            (ORIGINAL, not_converged(trajectory, self.config.deletion.rounds[0])),
        ]
        for row in rows:
            name = row["strategy"]
            if is_reference(name) and not row.get("refused"):
                losses_of = losses.get(name, [])
                found.append((name, diverged(name, losses_of, row["test_accuracy"], chance)))
        return [
            {"row": row, "name": finding.name, "message": finding.message}
            for row, finding in found
            if finding is not None
        ]

    def score_original(
        self, checkpoint: ArrayRecord, base: FederatedUnlearning, out_dir: Path
    ) -> dict[str, Any]:
        save_arrays(checkpoint, out_dir / "checkpoint.pt")
        generator = base.needset.needs.get("generator")
        if generator is not None and generator.arrays is not None:  # the GAN MuGAN draws from
            save_arrays(generator.arrays, out_dir / "generator.pt")
        evaluator = Evaluator(self.federation, self.device, self.config.seed, self.config.mia)
        attach_references(evaluator, self.config, self.build)  # --mia calibrated only
        self.scorer = _Scorer(self.federation, evaluator, self.device)
        self.original = self._model(checkpoint)
        row = self.scorer.metrics(self.original)
        self.scorer.set_original(self.original, row)
        return row

    def score(self, name: str, arrays: ArrayRecord, out_dir: Path) -> dict[str, Any]:
        model = self._model(arrays)
        if name == RETRAIN:  # the band's first member: the reference of the distances
            self.scorer.reference = model
        return self.scorer.metrics(model)

    def score_phase(self, arrays: ArrayRecord) -> dict[str, Any]:
        return self.scorer.evaluator.evaluate(self._model(arrays)).model_dump()

    def details(self, strategy: FederatedUnlearning) -> dict[str, Any]:
        record = strategy.deletion
        needs = sorted(strategy.unlearner.needs) if strategy.unlearner else ["rounds"]
        return {
            "needs": needs,
            "unlearning_seconds": record.unlearning_seconds,
            "recovery_seconds": record.recovery_seconds,
            "relay_hops": record.relay_hops,
            "relay_stop": record.relay_stop,
            "relay_hops_kept": record.relay_hops_kept,
            "relay_trace": record.relay_trace,
            "forget_samples": record.forget_samples,
            "need_figures": record.needs,
        }

    def finish(self, rows: list[dict[str, Any]]) -> None:
        rows[0] = {"strategy": ORIGINAL, **self.scorer.metrics(self.original)}  # now with distances
        for row in rows[1:]:
            row.setdefault("jsd", 0.0)
        _fill_anamnesis(rows)
        rows += [{"strategy": name, "refused": reason} for name, reason in self.refused.items()]

    def write(self, result: Comparison) -> None:
        write_comparison(result)

    def _model(self, arrays: ArrayRecord) -> ClassifierModel:
        return load_numpy_state(self.build(), {k: a.numpy() for k, a in arrays.items()})


def _fill_anamnesis(rows: list[dict[str, Any]]) -> None:
    """AIN of every row: its relearn steps over the retrained model's (paper 002 Eq. 10)."""
    retrain = next(r for r in rows if r["strategy"] == RETRAIN).get("relearn_steps")
    for row in rows:
        steps = row.get("relearn_steps")
        row["ain"] = None if steps is None or not retrain else anamnesis_index(steps, retrain)


def write_comparison(result: Comparison) -> None:
    """Write ``compare.csv``, ``compare.json``, ``compare.md`` and ``compare.png``."""
    out = result.out_dir
    payload = {
        "details": result.details,
        "base_seconds": result.base_seconds,
        "after_rounds": result.after_rounds,
        "trajectory": result.trajectory,
        "findings": result.findings,
        "config": result.config,
    }
    refusals = [row for row in result.rows if row.get("refused")]
    columns = [*CSV_COLUMNS, *phase_columns(result.rows), *(["refused"] if refusals else [])]
    write_rows(out, "compare", result.rows, columns, payload)
    markdown = markdown_table(result.rows)
    if result.findings:
        notes = "\n".join(
            f"- **{f['name']}** ({f['row']}): {f['message']}" for f in result.findings
        )
        markdown = f"Not comparable as it stands:\n\n{notes}\n\n{markdown}"
    if refusals:
        markdown += "\n\nNot run: " + "; ".join(row["refused"] for row in refusals) + "."
    durability = durability_table(result.rows)
    if durability:
        rounds = result.after_rounds
        markdown += (
            f"\n\nEach metric right after the deletion step (`<column> step`) and after "
            f"{rounds} further FedAvg rounds on the remaining data (`<column> end`); the "
            f"columns are those explained above (accuracies and attack rates in %):"
            f"\n\n{durability}"
        )
    (out / "compare.md").write_text(markdown + "\n")
    from fedforget.report.plot import plot_comparison

    plot_comparison(result.rows, out / "compare.png")
