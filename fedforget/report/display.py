"""Rich live display of a run and the final phase table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedforget.metrics import PhaseMetrics
from fedforget.report.comparison import COST_COLUMNS, ORIGINAL, format_cell, visible_columns
from fedforget.report.recorder import Display
from fedforget.report.summary import Summary

PHASE_LABELS = {
    "federated": "FedAvg rounds",
    "retrain": "retrain (strategy)",
    "reference": "retrain reference",
    "unlearning": "unlearning epochs",
    "recovery": "relay hops",
}
METRIC_LABELS = {
    "test_accuracy": "test acc",
    "forget_accuracy": "D_f acc",
    "retain_accuracy": "D_r acc",
    "forget_test_accuracy": "D_tf acc",
    "retain_test_accuracy": "D_tr acc",
    "backdoor_success": "backdoor",
    "mia_success": "MIA",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _metrics_line(metrics: PhaseMetrics) -> str:
    values = metrics.model_dump()
    return "  ".join(
        f"{label} {_pct(values[key])}"
        for key, label in METRIC_LABELS.items()
        if values[key] is not None
    )


class RichDisplay(Display):
    """Progress bars for rounds, unlearning epochs and relay hops, a line per round."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.bars = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self._round_seconds: float = 0.0

    def __enter__(self) -> RichDisplay:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def _task(self, phase: str, total: int) -> Any:
        if phase not in self.tasks:
            label = PHASE_LABELS.get(phase, phase)
            self.tasks[phase] = self.bars.add_task(label, total=total, note="")
        return self.tasks[phase]

    def run_started(self, phase: str, total_rounds: int) -> None:
        self._task(phase, total_rounds)

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        self._round_seconds = float(info.get("round_seconds", 0.0))
        self.bars.update(self._task(phase, 0), completed=server_round)

    def round_metrics(self, phase: str, server_round: int, metrics: PhaseMetrics) -> None:
        self.bars.console.print(
            f"[dim]{PHASE_LABELS.get(phase, phase)}[/] round {server_round:>3}  "
            f"{_metrics_line(metrics)}  [dim]({self._round_seconds:.1f} s)[/]"
        )

    def checkpoint_metrics(self, name: str, metrics: PhaseMetrics) -> None:
        self.bars.console.print(f"[bold]{name.replace('_', ' ')}[/]  {_metrics_line(metrics)}")

    def progress(self, phase: str, step: int, total: int, info: dict[str, float]) -> None:
        task = self._task(phase, total)
        note = "  ".join(f"{k} {v:.3f}" for k, v in info.items())
        self.bars.update(task, completed=step, total=total, note=note)


def phase_table(summary: Summary) -> Table:
    """The phases of a run beside the retrain reference, as a rich table."""
    table = Table(title=f"fedforget — {summary.strategy}, {summary.deletion.mode} deletion")
    table.add_column("metric")
    names = [name for name, value in summary.phases if value is not None]
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    if summary.reference is not None:
        table.add_column("retrain reference", justify="right", style="cyan")
    for key, label in METRIC_LABELS.items():
        cells = [_pct(getattr(getattr(summary.phases, name), key)) for name in names]
        if summary.reference is not None:
            cells.append(_pct(getattr(summary.reference.final, key)))
        if any(cell != "-" for cell in cells):
            table.add_row(label, *cells)
    return table


def timing_table(summary: Summary) -> Table:
    """Wall times, the deletion step and the distance to the reference."""
    table = Table(title="timings and distances", show_header=False)
    timings = summary.timings
    rounds = timings.round_seconds
    if rounds:
        table.add_row("mean FedAvg round", f"{sum(rounds) / len(rounds):.2f} s")
    for label, value in (
        ("unlearning", timings.unlearning_seconds),
        ("recovery relay", timings.recovery_seconds),
        ("retrain reference", timings.retrain_seconds),
        ("total", timings.total_seconds),
    ):
        if value is not None:
            table.add_row(label, f"{value:.2f} s")
    table.add_row("relay hops", str(summary.deletion.relay_hops))
    if summary.reference is not None:
        table.add_row("JSD to retrain (test)", f"{summary.reference.jsd:.4f}")
        table.add_row("L2 to retrain (weights)", f"{summary.reference.l2:.3f}")
    if summary.efficiency is not None:
        table.add_row("simulation efficiency", f"{summary.efficiency.efficiency:.2f}")
    return table


TERMINAL_OMITS = frozenset(COST_COLUMNS[:5])


def comparison_table(rows: list[dict[str, Any]], mode: str) -> Table:
    """``fedforget compare``'s rows as a rich table (accuracies and attack rates in %)."""
    table = Table(title=f"fedforget compare — {mode} deletion (accuracies in %)")
    table.add_column("strategy")
    # bytes and the client/server split stay in compare.md/.csv: a terminal is too narrow
    columns = [c for c in visible_columns(rows) if c[0] not in TERMINAL_OMITS]
    for _, label in columns:
        table.add_column(label, justify="right")
    for row in rows:
        style = "dim" if row["strategy"] == ORIGINAL else None
        cells = [format_cell(key, row.get(key)) for key, _ in columns]
        table.add_row(row["strategy"], *cells, style=style)
    return table
