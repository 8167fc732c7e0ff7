"""Rich live display of a run and the final phase table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column as TableColumn
from rich.table import Table
from rich.text import Text

from fedforget.metrics import PhaseMetrics
from fedforget.report.comparison import (
    DEFAULT_COLUMNS,
    ORIGINAL,
    PHASE_METRICS,
    TABLE_COLUMNS,
    Column,
    format_cell,
    legend,
    visible_columns,
)
from fedforget.report.formatting import relay_hops_text
from fedforget.report.recorder import Display
from fedforget.report.summary import Summary

PHASE_LABELS = {
    "federated": "FedAvg rounds",
    "retrain": "retrain (strategy)",
    "reference": "retrain reference",
    "unlearning": "unlearning epochs",
    "recovery": "relay hops tried",
}
RECOVERY = "recovery"
METRIC_COLUMNS = [c for c in TABLE_COLUMNS if c.key in PHASE_METRICS]
"""The phase metrics as the display names them (compare's headers and meanings)."""


def _phase_label(phase: str) -> str:
    """``recovery`` -> ``relay hops tried``; a compare branch keeps its ``<strategy>: `` prefix."""
    branch, _, name = phase.rpartition(": ")
    label = PHASE_LABELS.get(name, name)
    return f"{branch}: {label}" if branch else label


def _shown(values: dict[str, Any]) -> list[Column]:
    return [c for c in METRIC_COLUMNS if values.get(c.key) is not None]


def _metrics_line(metrics: PhaseMetrics) -> str:
    values = metrics.model_dump()
    return "  ".join(f"{c.label} {_cell(c.key, values)}" for c in _shown(values))


def _cell(key: str, values: dict[str, Any]) -> str:
    """A phase metric as the display shows it: ``97.50%``, or an MIA figure with its power."""
    text = format_cell(key, values)
    return text if key == "mia_success" or text == "-" else f"{text}%"


class RichDisplay(Display):
    """Progress bars for rounds, unlearning epochs and relay hops, a line per round.

    The first metrics line is preceded by a legend of its abbreviations.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        # the counts and times never shrink; a long note wraps (a pipe is often 80 columns)
        self.bars = Progress(
            TextColumn("{task.description:<20}", table_column=TableColumn(no_wrap=True)),
            BarColumn(bar_width=12),
            MofNCompleteColumn(table_column=TableColumn(no_wrap=True)),
            TimeElapsedColumn(table_column=TableColumn(no_wrap=True)),
            TextColumn("{task.fields[note]}", table_column=TableColumn(overflow="fold")),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self._round_seconds: float = 0.0
        self._explained = False

    def __enter__(self) -> RichDisplay:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def _task(self, phase: str, total: int) -> Any:
        if phase not in self.tasks:
            self.tasks[phase] = self.bars.add_task(_phase_label(phase), total=total, note="")
        return self.tasks[phase]

    def _print_metrics(self, prefix: str, metrics: PhaseMetrics, suffix: str = "") -> None:
        if not self._explained:
            self._explained = True
            names = [f"{c.label} = {c.short}" for c in _shown(metrics.model_dump())]
            self.bars.console.print(Text(f"legend (in %): {'; '.join(names)}", style="dim"))
        self.bars.console.print(f"{prefix}  {_metrics_line(metrics)}{suffix}")

    def run_started(self, phase: str, total_rounds: int) -> None:
        self._task(phase, total_rounds)

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        self._round_seconds = float(info.get("round_seconds", 0.0))
        self.bars.update(self._task(phase, 0), completed=server_round)

    def round_metrics(self, phase: str, server_round: int, metrics: PhaseMetrics) -> None:
        prefix = f"[dim]{_phase_label(phase)}[/] round {server_round:>3}"
        self._print_metrics(prefix, metrics, f"  [dim]({self._round_seconds:.1f} s)[/]")

    def checkpoint_metrics(self, name: str, metrics: PhaseMetrics) -> None:
        self._print_metrics(f"[bold]{name.replace('_', ' ')}[/]", metrics)

    def progress(self, phase: str, step: int, total: int, info: dict[str, float]) -> None:
        task = self._task(phase, total)
        self.bars.update(
            task, completed=step, total=total, note=progress_note(phase, step, total, info)
        )


def progress_note(phase: str, step: int, total: int, info: dict[str, float]) -> str:
    """The text beside a progress bar: the step's numbers, for the relay its hops.

    The relay reports ``(hops tried, max hops, {"kept": ..., "objective": ...})`` when it
    ends; its note then says what the run's table says (:func:`relay_hops_text`).
    """
    if phase.rpartition(": ")[2] == RECOVERY and "kept" in info:
        others = {k: v for k, v in info.items() if k != "kept"}
        note = relay_hops_text(step, int(info["kept"]), total)
        return "  ".join([note, *(f"{k} {v:.3f}" for k, v in others.items())])
    return "  ".join(f"{k} {v:.3f}" for k, v in info.items())


def phase_table(summary: Summary) -> Table:
    """The phases of a run beside the retrain reference, as a rich table with a legend."""
    table = Table(title=f"fedforget — {summary.strategy}, {summary.deletion.mode} deletion")
    table.add_column("metric")
    names = [name for name, value in summary.phases if value is not None]
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    models = [getattr(summary.phases, name) for name in names]
    reference = summary.reference if _is_reference(summary) else None
    if reference is not None and reference.at_deletion is not None:
        table.add_column("retrain at deletion round", justify="right", style="cyan")
        models.append(reference.at_deletion)
    if reference is not None:
        band = f" (band of {reference.members})" if reference.members > 1 else ""
        table.add_column(f"retrain reference{band}", justify="right", style="cyan")
        models.append(reference.final)
    values = [m.model_dump() for m in models]
    shown = [c for c in METRIC_COLUMNS if any(v.get(c.key) is not None for v in values)]
    for column in shown:
        table.add_row(column.label, *(_cell(column.key, v) for v in values))
    notes = legend(shown)
    if summary.reference is not None and reference is None:
        notes.append(f"no retrain reference shown: {summary.reference.status}")
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
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
    table.add_row("relay hops", relay_row(summary))
    deletion = summary.deletion
    if deletion.skipped == "untrained":
        seen = f"{deletion.validation_accuracy_before:.1%} on the validation set"
        chance = f"chance {deletion.validation_chance:.1%}"
        table.add_row("unlearning skipped", f"model not learned ({seen}, {chance}): D_f dropped")
    if _is_reference(summary):
        table.add_row("JSD to retrain (test)", f"{summary.reference.jsd:.4f}")
        table.add_row("L2 to retrain (weights)", f"{summary.reference.l2:.3f}")
    if summary.efficiency is not None:
        table.add_row("simulation efficiency", f"{summary.efficiency.efficiency:.2f}")
    return table


def _is_reference(summary: Summary) -> bool:
    """Whether the run has a retrain reference fit for comparison (it did not diverge)."""
    return summary.reference is not None and summary.reference.status == "ok"


def relay_row(summary: Summary) -> str:
    """The relay's hops as the progress bar said them, or ``not run``."""
    deletion = summary.deletion
    if deletion.relay_stop is None:
        return "not run"
    max_hops = summary.config.get("recovery", {}).get("max_hops")
    return relay_hops_text(
        deletion.relay_hops, deletion.relay_hops_kept, max_hops, deletion.relay_stop
    )


def comparison_table(
    rows: list[dict[str, Any]], mode: str, columns: Sequence[str] | None = DEFAULT_COLUMNS
) -> ComparisonView:
    """``fedforget compare``'s rows for the terminal (accuracies and attack rates in %).

    ``columns``: the row keys to show (:func:`fedforget.report.comparison.parse_columns`;
    ``None`` = every column). The view fits the console's width (:class:`ComparisonView`).
    """
    return ComparisonView(rows, mode, columns)


class ComparisonView:
    """``compare``'s table, laid out for the width it is printed at, with a legend.

    One row per strategy when that fits the width; otherwise one column per strategy (the
    metrics down the side), as many strategies side by side as fit, block after block, so a
    terminal or a pipe of 80 columns shows every number in full. Rows whose strategy did not
    run are listed below, with why.
    """

    def __init__(
        self, rows: list[dict[str, Any]], mode: str, columns: Sequence[str] | None
    ) -> None:
        self.title = f"fedforget compare — {mode} deletion (accuracies in %)"
        self.rows = [row for row in rows if not row.get("refused")]
        self.refused = [row["refused"] for row in rows if row.get("refused")]
        self.columns = visible_columns(self.rows, columns)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = self.wide()
        if _natural_width(console, options, wide) <= options.max_width:
            yield wide
        else:
            yield from self.blocks(console, options)
        notes = legend(self.columns) + [f"not run: {reason}" for reason in self.refused]
        yield Text("\n".join(notes), style="dim")

    def wide(self) -> Table:
        """One row per strategy, one column per metric."""
        table = Table(title=self.title, box=box.SIMPLE_HEAD)
        table.add_column("strategy")
        for column in self.columns:
            table.add_column(column.label, justify="right")
        for row in self.rows:
            cells = [format_cell(c.key, row) for c in self.columns]
            table.add_row(row["strategy"], *cells, style=_row_style(row))
        return table

    def tall(self, rows: list[dict[str, Any]], title: str | None) -> Table:
        """One column per strategy of ``rows``, one row per metric."""
        table = Table(title=title, box=box.SIMPLE_HEAD)
        table.add_column("")
        for row in rows:
            table.add_column(row["strategy"], justify="right", style=_row_style(row))
        for column in self.columns:
            table.add_row(column.label, *(format_cell(column.key, row) for row in rows))
        return table

    def blocks(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        """:meth:`tall` tables of as many strategies as fit the width, one after another."""
        rest, title = self.rows, self.title
        while rest:
            count = len(rest)
            while (
                count > 1
                and _natural_width(console, options, self.tall(rest[:count], title))
                > options.max_width
            ):
                count -= 1
            yield self.tall(rest[:count], title)
            rest, title = rest[count:], None


def _natural_width(console: Console, options: ConsoleOptions, table: Table) -> int:
    """The width ``table`` takes when nothing is squeezed."""
    return Measurement.get(console, options.update_width(10_000), table).maximum


def _row_style(row: dict[str, Any]) -> str | None:
    return "dim" if row["strategy"] == ORIGINAL else None
