"""What a reader sees: MIA figures with their power, the relay's hops, compare's tables.

Every renderer is driven with made-up numbers (no training), so these tests run in seconds.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable

import pytest
from rich.console import Console

from fedforget.config import ConfigError
from fedforget.metrics import PhaseMetrics
from fedforget.report.comparison import (
    CSV_COLUMNS,
    DEFAULT_COLUMNS,
    TABLE_COLUMNS,
    durability_table,
    markdown_table,
    parse_columns,
    phase_columns,
)
from fedforget.report.display import RichDisplay, comparison_table, phase_table, timing_table
from fedforget.report.formatting import MIA_MIN_POWER, format_mia
from fedforget.report.summary import DeletionSummary, Phases, Reference, Summary
from fedforget.report.sweep import aggregate, markdown

WEAK = (0.9867, 0.50)  # an attack at chance: its D_f share is noise
STRONG = (0.312, 0.74)


def _render(renderable: object, width: int = 200) -> str:
    """What ``renderable`` prints on a console that is not a terminal (a pipe)."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(renderable)
    return out.getvalue()


# ---------------------------------------------------------------------- the MIA figure
def test_an_attack_without_power_shows_its_power_instead_of_a_share():
    assert format_mia(*WEAK) == "no power (0.50)"
    assert format_mia(0.9, 0.59) == "no power (0.59)"
    assert format_mia(*STRONG) == "31.2 % (power 0.74)"
    assert format_mia(0.312, MIA_MIN_POWER) == "31.2 % (power 0.60)"
    assert format_mia(0.312, 0.74, spread=0.021) == "31.2 ± 2.1 % (power 0.74)"


def test_a_missing_mia_figure_or_power_is_said_so():
    assert format_mia(None, 0.7) == "-"
    assert format_mia(math.nan, 0.7) == "-"
    assert format_mia(None, None) == "-"
    assert format_mia(0.3, None) == "30.0 % (power ?)"
    assert format_mia(0.3, math.nan) == "30.0 % (power ?)"


def _metrics(mia: float | None, power: float | None) -> PhaseMetrics:
    return PhaseMetrics(
        test_accuracy=0.97,
        forget_accuracy=0.95,
        retain_accuracy=0.98,
        forget_test_accuracy=None,
        retain_test_accuracy=0.97,
        backdoor_success=None,
        mia_success=mia,
        mia_power=power,
    )


def _summary(mia: float | None = None, power: float | None = None, **deletion) -> Summary:
    metrics = _metrics(mia, power)
    return Summary(
        fedforget_version="test",
        strategy="distill",
        phases=Phases(before_deletion=metrics, after_unlearning=metrics, final=metrics),
        reference=Reference(final=metrics, jsd=0.01, l2=1.0),
        deletion=DeletionSummary(mode="random", **deletion),
        config={"recovery": {"max_hops": 5}},
    )


def _compare_row(strategy: str, mia: float | None, power: float | None, **extra) -> dict:
    return {
        "strategy": strategy,
        "test_accuracy": 0.9753,
        "forget_accuracy": 0.961,
        "retain_accuracy": 0.982,
        "retain_test_accuracy": 0.9753,
        "mia_success": mia,
        "mia_power": power,
        "end.test_accuracy": 0.9761,
        "end.mia_success": mia,
        "end.mia_power": power,
        **extra,
    }


def _live_round(mia, power) -> str:
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=200, color_system=None))
    display.round_metrics("federated", 3, _metrics(mia, power))
    display.checkpoint_metrics("after_unlearning", _metrics(mia, power))
    return out.getvalue()


def _sweep_md(mia, power) -> str:
    row = {"scenario": "overfit", "partition": "iid", "seed": 0, "strategy": "distill"}
    row.update({"after_recovery.mia_success": mia, "after_recovery.mia_power": power})
    return markdown(aggregate([row]), [("after_recovery.mia_success", "MIA", 100.0)])


RENDERERS: dict[str, Callable[[float | None, float | None], str]] = {
    "live display": _live_round,
    "simulate's table": lambda mia, power: _render(phase_table(_summary(mia, power))),
    "compare, wide terminal": lambda mia, power: _render(
        comparison_table([_compare_row("distill", mia, power)], "random")
    ),
    "compare, 80-column pipe": lambda mia, power: _render(
        comparison_table([_compare_row("distill", mia, power)], "random", None), 80
    ),
    "compare.md": lambda mia, power: markdown_table([_compare_row("distill", mia, power)]),
    "compare.md, later rounds": lambda mia, power: durability_table(
        [_compare_row("distill", mia, power)]
    ),
    "sweep.md": _sweep_md,
}


@pytest.mark.parametrize("renderer", RENDERERS)
def test_every_renderer_hides_a_powerless_mia_share(renderer):
    text = RENDERERS[renderer](*WEAK)
    assert "no power (0.50)" in text
    assert "98.7" not in text and "98.67" not in text


@pytest.mark.parametrize("renderer", RENDERERS)
def test_every_renderer_shows_a_powerful_mia_share_with_its_power(renderer):
    text = RENDERERS[renderer](*STRONG)
    assert "31.2" in text and "(power 0.74)" in text
    assert "no power (0." not in text


@pytest.mark.parametrize("renderer", RENDERERS)
def test_every_renderer_leaves_a_missing_mia_out_quietly(renderer):
    text = RENDERERS[renderer](None, None)
    assert "no power (0." not in text and "(power 0." not in text and "power ?" not in text


def test_the_csv_keeps_the_mia_and_its_power_as_numbers():
    assert CSV_COLUMNS.index("mia_power") == CSV_COLUMNS.index("mia_success") + 1
    rows = [_compare_row("distill", *WEAK)]
    assert "end.mia_power" in phase_columns(rows)


# ---------------------------------------------------------------------- the relay's hops
def test_the_relay_bar_and_the_run_table_say_the_same_hops():
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=200, color_system=None))
    with display:
        display.progress("recovery", 0, 5, {})
        display.progress("recovery", 2, 5, {"kept": 0, "objective": 0.91})
    bar = out.getvalue()
    table = _render(timing_table(_summary(relay_hops=2, relay_hops_kept=0, relay_stop="budget")))
    said = "2 of at most 5 tried, 0 kept"
    assert said in bar and said in table
    assert "2/5" in bar and "5/5" not in bar
    assert "time budget spent" in table


def test_a_run_without_relay_says_so():
    assert re.search(r"relay hops\s+.*not run", _render(timing_table(_summary())))


def test_compare_branches_keep_their_name_on_the_relay_bar():
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=200, color_system=None))
    with display:
        display.progress("distill: recovery", 1, 5, {"kept": 1, "objective": 0.9})
    assert "distill: relay hops tried" in out.getvalue()
    assert "1 of at most 5 tried, 1 kept" in out.getvalue()


# ---------------------------------------------------------------------- abbreviations
def test_the_display_explains_its_abbreviations_once():
    text = _live_round(*STRONG)
    assert text.count("legend") == 1
    for label in ("test", "D_r", "D_f", "D_tr", "MIA"):
        assert re.search(rf"\b{label} =\s+\w", text), label


def test_simulates_table_explains_every_abbreviation_it_shows():
    text = _render(phase_table(_summary(*STRONG)))
    for label in ("test", "D_r", "D_f", "D_tr", "MIA"):
        assert re.search(rf"^│ {label}\s+│", text, re.M), label  # the row
        assert re.search(rf"{label}: \w", text), label  # and its meaning


# ---------------------------------------------------------------------- compare's table
def _full_row(strategy: str, index: int) -> dict:
    """A row with every column of the table filled."""
    row = {c.key: 0.5 + 0.01 * index for c in TABLE_COLUMNS}
    row.update(
        strategy=strategy,
        test_accuracy=0.9700 + 0.0011 * index,
        mia_success=0.5,
        mia_power=0.51 if index % 2 else 0.83,
        bytes_to_clients=2_500_000,
        bytes_from_clients=1_200_000,
        history_bytes=0,
        seconds=12.5,
    )
    return row


NAMES = ["original", "retrain", "distill", "bad-teacher", "federaser", "fast-fedul"]


@pytest.mark.parametrize("columns", [DEFAULT_COLUMNS, None])
@pytest.mark.parametrize("count", [3, len(NAMES)])
def test_compare_on_an_80_column_pipe_shows_every_number_in_full(columns, count):
    rows = [_full_row(name, i) for i, name in enumerate(NAMES[:count])]
    text = _render(comparison_table(rows, "random", columns), width=80)
    assert "…" not in text and "..." not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for row in rows:
        assert row["strategy"] in text
        assert f"{100 * row['test_accuracy']:.2f}" in text
    assert "no power (0.51)" in text and "50.0 % (power 0.83)" in text


def test_compare_on_an_80_column_pipe_by_default():
    rows = [_full_row(name, i) for i, name in enumerate(NAMES[:3])]
    text = _render(comparison_table(rows, "random"), width=80)
    assert "…" not in text
    for row in rows:
        assert f"{100 * row['test_accuracy']:.2f}" in text


def test_a_wide_terminal_gets_one_line_per_strategy():
    rows = [_full_row(name, i) for i, name in enumerate(NAMES[:3])]
    text = _render(comparison_table(rows, "random", ("test_accuracy", "seconds")), width=200)
    assert re.search(r"distill\s+97\.22\s+12\.5", text)
    assert "MIA" not in text.split("\n\n")[0]  # only the columns asked for


def test_the_terminal_lists_strategies_that_did_not_run():
    rows = [_full_row("retrain", 1), {"strategy": "pga", "refused": "pga removes clients only"}]
    text = _render(comparison_table(rows, "random"), width=80)
    assert "not run: pga removes clients only" in text


def test_columns_are_chosen_by_header_or_key():
    assert parse_columns(None) == parse_columns("default") == DEFAULT_COLUMNS
    assert parse_columns("all") is None
    assert parse_columns("test, MIA,speedup_vs_retrain") == (
        "test_accuracy",
        "mia_success",
        "speedup_vs_retrain",
    )
    with pytest.raises(ConfigError, match=r"unknown column.*bogus.*choose default, all"):
        parse_columns("test,bogus")


def test_compare_md_explains_every_column_it_shows(tmp_path):
    from fedforget.simulations.branching import Comparison
    from fedforget.simulations.compare import write_comparison

    rows = [_full_row(name, i) for i, name in enumerate(NAMES[:3])]
    for row in rows[1:]:
        row.update({f"end.{k}": row[k] for k in ("test_accuracy", "mia_success", "mia_power")})
    rows.append({"strategy": "pga", "refused": "pga removes clients only"})
    write_comparison(Comparison(rows, tmp_path, {}, after_rounds=3))
    text = (tmp_path / "compare.md").read_text()
    headers = [
        cell.strip()
        for line in text.splitlines()
        if line.startswith("| strategy |")
        for cell in line.strip("|").split("|")
    ]
    assert len(headers) > len(TABLE_COLUMNS)  # both tables were read
    for header in headers:
        base = re.sub(r" (step|end)$", "", header)
        assert f"- `{base}`: " in text, header
    assert "`<column> step`" in text and "`<column> end`" in text
    with (tmp_path / "compare.csv").open() as handle:
        stored = list(csv.DictReader(handle))
    assert float(stored[1]["mia_power"]) == pytest.approx(0.51)  # a number, not a phrase
