"""``fedforget compare --task gan``: GAN unlearning strategies branched from one federated GAN.

The federation trains its conditional GAN once, up to the deletion round; every strategy then
carries out the same deletion from that checkpoint, in the same Flower run (each branch named
in its messages, as in :mod:`fedforget.simulations.compare`). ``retrain`` runs first: paper
001's baseline, and the reference of the speed-up. Each row is paper 001's metrics of the GAN
right after the strategy's deletion step (:class:`fedforget.server.gan.GanEvaluator`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from rich.table import Table

from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import build_federation
from fedforget.gan import ConditionalGan
from fedforget.report import RunObserver
from fedforget.server.app import gan_factory
from fedforget.server.gan import (
    GanEvaluator,
    GanSummary,
    gan_from_state,
    make_gan_strategy,
    plot_gan_samples,
)
from fedforget.simulations.branching import (
    ORIGINAL,
    BranchTask,
    Comparison,
    run_branches,
    save_arrays,
    write_rows,
)
from fedforget.simulations.runner import (
    check_gan_strategies,
    check_run,
    run_on_simulation_engine,
)
from fedforget.strategies import FederatedUnlearning
from fedforget.strategies.gan import FederatedGan, gan_strategy_names
from fedforget.training import resolve_device

GAN_COLUMNS = [
    ("strategy", "strategy"),
    ("forgotten_recognition", "judge: forgotten %"),
    ("remaining_recognition", "judge: others %"),
    ("auc", "D AUC"),
    ("fd_forgotten", "FD forgotten"),
    ("fd_remaining", "FD others"),
    ("downstream_accuracy", "downstream %"),
    ("seconds", "seconds"),
    ("speedup_vs_retrain", "speed-up"),
]
PERCENT = {"forgotten_recognition", "remaining_recognition", "downstream_accuracy"}


GanComparison = Comparison
"""The outcome of ``fedforget compare --task gan`` (one row per strategy)."""


def gan_compare(
    config: SimulationConfig, strategies: list[str], display: RunObserver | None = None
) -> GanComparison:
    """Run the GAN comparison on Flower's simulation engine; write and return the results."""
    check_run(config)
    check_gan_strategies(config, strategies)
    return run_on_simulation_engine(
        config, lambda grid: run_gan_comparison(grid, config, strategies, display)
    )


def run_gan_comparison(
    grid: Grid,
    config: SimulationConfig,
    strategies: list[str],
    display: RunObserver | None = None,
) -> GanComparison:
    """Train the GAN to the deletion round once, then branch every strategy from there."""
    return run_branches(grid, GanBranches(config), strategies, display)


class GanBranches(BranchTask):
    """``fedforget compare --task gan``: GAN branches, scored with paper 001's metrics."""

    label = "gan-compare"

    def __init__(self, config: SimulationConfig) -> None:
        super().__init__(config)
        self.federation = build_federation(config)
        self.device = resolve_device(config.resources.server_device)
        self.evaluator: GanEvaluator | None = None
        self.gans: dict[str, ConditionalGan] = {}

    def initial_arrays(self) -> ArrayRecord:
        return ArrayRecord(gan_factory(self.config, self.federation)().state_dict())

    def strategy(self, name: str, branch: str | None, observer: RunObserver) -> FederatedGan:
        return make_gan_strategy(
            self.config, name, self.federation, observer, self.device, branch=branch
        )

    def check_phases(self, after_rounds: int) -> None:
        if after_rounds:
            raise ConfigError("--after-rounds applies to classifier comparisons, not --task gan")

    def score_original(
        self, checkpoint: ArrayRecord, base: FederatedUnlearning, out_dir: Path
    ) -> dict[str, Any]:
        self.evaluator = GanEvaluator(self.config, self.federation, self.device)
        save_arrays(checkpoint, out_dir / "models" / f"{ORIGINAL}.pt")
        return self.score(ORIGINAL, checkpoint, out_dir)

    def score(self, name: str, arrays: ArrayRecord, out_dir: Path) -> dict[str, Any]:
        state = {k: v.numpy() for k, v in arrays.items()}
        self.gans[name] = gan_from_state(self.config, self.federation, state)
        scores = self.evaluator.evaluate(self.gans[name]).model_dump()
        scores["recognition"] = {str(k): v for k, v in scores["recognition"].items()}
        return scores

    def details(self, strategy: FederatedGan) -> dict[str, Any]:
        record = strategy.deletion
        return {
            "unlearning_seconds": record.unlearning_seconds,
            "forget_samples_received": int(record.need_figure("forget", "samples_received")),
            "learning_samples": int(record.need_figure("retain", "samples")),
            "report": strategy.unlearning_report,
        }

    def write(self, result: GanComparison) -> None:
        write_gan_comparison(result, self.evaluator.judge_name)
        plot_gan_samples(self.gans, result.out_dir / "samples.png")


def gan_cell(key: str, value: Any) -> str:
    """One table cell: percentages for rates, 3 decimals for AUC, 2 for the rest."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if key in PERCENT:
        return f"{100 * value:.1f}"
    if key == "auc":
        return f"{value:.3f}"
    if key == "speedup_vs_retrain":
        return f"{value:.1f}x"
    return f"{value:.2f}"


def parse_gan_strategies(text: str) -> list[str]:
    """``"cascaded,retrain"`` or ``"all"`` -> GAN-task strategy names (unknown: ConfigError)."""
    known = gan_strategy_names()
    names = known if text.strip() == "all" else [t.strip() for t in text.split(",")]
    names = [n for n in dict.fromkeys(names) if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"unknown GAN strategy '{unknown[0] if unknown else text}'; choose from: "
            + ", ".join(known)
        )
    return names


def gan_table(rows: list[dict[str, Any]]) -> Table:
    """The comparison as a rich table."""
    table = Table(title="GAN unlearning (paper 001 metrics; FD is not Inception-FID)")
    for _, title in GAN_COLUMNS:
        table.add_column(title, justify="left" if title == "strategy" else "right")
    for row in rows:
        table.add_row(*(gan_cell(key, row.get(key)) for key, _ in GAN_COLUMNS))
    return table


def gan_phase_table(summary: GanSummary) -> Table:
    """A GAN-task run's phases as a rich table (``fedforget simulate --task gan``)."""
    rows = [{"strategy": name, **m.model_dump()} for name, m in summary.phases.items()]
    if summary.unlearning_seconds is not None and len(rows) > 1:
        rows[1]["seconds"] = summary.unlearning_seconds
    if summary.retrain_seconds is not None:
        rows[-1]["seconds"] = summary.retrain_seconds
    table = gan_table(rows)
    table.title = f"GAN task, strategy {summary.config['strategy']}: the GAN at each phase"
    return table


def gan_markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table."""
    head = "| " + " | ".join(title for _, title in GAN_COLUMNS) + " |"
    rule = "|" + "---|" * len(GAN_COLUMNS)
    body = [
        "| " + " | ".join(gan_cell(key, row.get(key)) for key, _ in GAN_COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join([head, rule, *body])


def write_gan_comparison(result: GanComparison, judge: str) -> None:
    """``gan_compare.csv``, ``gan_compare.json`` and ``gan_compare.md``."""
    out = result.out_dir
    payload = {
        "details": result.details,
        "base_seconds": result.base_seconds,
        "judge": judge,
        "config": result.config,
    }
    write_rows(out, "gan_compare", result.rows, [key for key, _ in GAN_COLUMNS], payload)
    note = (
        f"\n\nJudge and feature extractor: {judge}. FD is a Frechet distance in that "
        "classifier's penultimate features, not Inception-FID.\n"
    )
    (out / "gan_compare.md").write_text(gan_markdown_table(result.rows) + note)
