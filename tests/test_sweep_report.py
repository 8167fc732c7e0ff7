"""The sweep's tables: the retrain band, mean +- std over seeds, acceptance, discrimination."""

from __future__ import annotations

import math

import pytest

from fedforget.report.sweep import (
    Stat,
    acceptance,
    add_band,
    aggregate,
    checks_markdown,
    discriminating,
    markdown,
    stat,
)


def _row(strategy: str, seed: int, test: float, forget: float, **extra) -> dict:
    return {
        "scenario": "random-4%",
        "partition": "iid",
        "seed": seed,
        "strategy": strategy,
        "mode": "random",
        "after_recovery.test_accuracy": test,
        "end.test_accuracy": test,
        "after_recovery.forget_accuracy": forget,
        "end.forget_accuracy": forget,
        **extra,
    }


def test_stat_is_mean_and_sample_std():
    s = stat([1.0, 2.0, 3.0])
    assert s.mean == pytest.approx(2.0)
    assert s.std == pytest.approx(1.0)
    assert (s.low, s.high, s.n) == (1.0, 3.0, 3)
    assert stat([5.0]).std == 0.0
    assert math.isnan(stat([]).mean)
    assert stat([0.5, 0.7]).format(100) == "60.00 ± 14.14"


def _band(rows: list[dict], **extra) -> list[dict]:
    """Rows with a cell status, through the band."""
    return add_band([{"cell_status": "ok", **row, **extra} for row in rows])


def test_gaps_and_tolerances_are_taken_against_the_cells_retrain_band():
    rows = [
        _row("retrain", 0, 0.98, 0.97),
        _row("retrain", 0, 0.96, 0.97),  # a second member of seed 0's band
        _row("distill", 0, 0.975, 0.90),
        _row("retrain", 1, 0.90, 0.80),
        _row("distill", 1, 0.91, 0.81),
    ]
    banded = _band(rows)
    assert banded[2]["gap.end.test_accuracy"] == pytest.approx(0.005)  # 0.975 - mean 0.97
    spread = stat([0.98, 0.96]).std
    assert banded[2]["tol.end.test_accuracy"] == pytest.approx(2 * spread)  # 2 std > 0.5 pt
    assert banded[4]["gap.end.test_accuracy"] == pytest.approx(0.01)
    assert banded[4]["tol.end.test_accuracy"] == pytest.approx(0.005)  # one retrain: 0.5 pt
    assert "gap.seed" not in banded[2] and "gap.mode" not in banded[2]


def test_rows_without_retrain_get_no_gaps():
    (row,) = _band([_row("distill", 0, 0.9, 0.9)])
    assert not any(key.startswith(("gap.", "tol.")) for key in row)


def test_aggregate_groups_seeds_and_keeps_constant_text():
    rows = _band(
        [
            _row("retrain", 0, 0.98, 0.97, relay_gain=0.0),
            _row("distill", 0, 0.97, 0.96, relay_gain=0.01),
            _row("retrain", 1, 0.98, 0.97, relay_gain=0.0),
            _row("distill", 1, 0.99, 0.98, relay_gain=-0.02),
        ]
    )
    entries = {e["strategy"]: e for e in aggregate(rows)}
    distill = entries["distill"]
    assert distill["seeds"] == [0, 1]
    assert distill["mode"] == "random"
    assert isinstance(distill["end.test_accuracy"], Stat)
    assert distill["end.test_accuracy"].mean == pytest.approx(0.98)
    assert distill["gap.end.test_accuracy"].mean == pytest.approx(0.0)
    assert distill["relay_gain"].low == pytest.approx(-0.02)


def test_acceptance_flags_what_fails():
    rows = _band(
        [
            _row("retrain", 0, 0.98, 0.97, deletion_rounds=0.0, relay_gain=0.0),
            _row("distill", 0, 0.96, 0.90, deletion_rounds=1.5, relay_gain=-0.01),
        ]
    )
    checks = acceptance(aggregate(rows), "distill")
    failed = {c.criterion for c in checks if not c.passed}
    assert "retrain - end test acc" in failed
    assert "|end D_f acc - retrain|" in failed
    assert "(unlearning + recovery) / round" in failed
    assert "relay change of test acc (min)" in failed
    good = _band(
        [
            _row("retrain", 0, 0.98, 0.97, deletion_rounds=0.0, relay_gain=0.0),
            _row("distill", 0, 0.978, 0.967, deletion_rounds=0.4, relay_gain=0.02),
        ]
    )
    assert all(c.passed for c in acceptance(aggregate(good), "distill"))


def test_a_wide_band_tolerates_more_and_a_class_deletion_may_forget_more_than_retrain():
    rows = [
        _row("retrain", 0, 0.98, 0.97),
        _row("retrain", 0, 0.94, 0.91),  # a noisy band: std 2.8 pt, tolerance 5.7 pt
        _row("distill", 0, 0.92, 0.90),
    ]
    checks = {c.criterion: c for c in acceptance(aggregate(_band(rows)), "distill")}
    assert checks["retrain - end test acc"].passed  # 4 pt below the band's mean, within 5.7
    classes = [
        {**_row("retrain", 0, 0.98, 0.0), "mode": "class", "end.forget_test_accuracy": 0.004},
        {**_row("distill", 0, 0.98, 0.0), "mode": "class", "end.forget_test_accuracy": 0.0},
    ]
    checks = {c.criterion: c for c in acceptance(aggregate(_band(classes)), "distill")}
    assert checks["end D_tf acc - retrain"].passed  # below the band: one-sided
    assert "|end D_f acc - retrain|" not in checks  # a class's D_f is what D_tf measures


def test_a_cell_is_discriminative_only_where_none_fails_a_check_clearly():
    def cell(none_forget: float) -> list[dict]:
        return _band(
            [
                _row("retrain", 0, 0.98, 0.70, deletion_rounds=0.0),
                _row("none", 0, 0.98, none_forget, deletion_rounds=0.0),
            ]
        )

    (found,) = discriminating(aggregate(cell(0.95))).values()  # none's D_f: 25 pt above
    assert found is not None and found.criterion.startswith("|") and found.excess > 0.2
    (blind,) = discriminating(aggregate(cell(0.703))).values()  # within the band: no test
    assert blind is None
    (close,) = discriminating(aggregate(cell(0.712))).values()  # 0.7 pt beyond: not clear
    assert close is None


def test_the_sweep_leaves_unfit_and_blind_cells_out_of_acceptance(tmp_path):
    from fedforget.simulations.sweep import _write

    def rows(scenario: str, none_forget: float, status: str = "ok") -> list[dict]:
        base = {"cell_status": status, "deletion_rounds": 0.1, "relay_gain": 0.0}
        return [
            {**_row("retrain", 0, 0.98, 0.70), **base, "scenario": scenario},
            {**_row("none", 0, 0.98, none_forget), **base, "scenario": scenario},
            {**_row("distill", 0, 0.90, 0.70), **base, "scenario": scenario},
        ]

    payload = _write(
        tmp_path,
        [*rows("telling", 0.95), *rows("blind", 0.70), *rows("unfit", 0.95, "not converged")],
        ["distill", "none"],
        1.0,
    )
    counted = {c["scenario"] for c in payload["checks"]}
    assert counted == {"telling"}  # the blind cell and the unfit one are not counted
    assert payload["unfit_cells"] == ["unfit|iid|0"]
    assert payload["discriminative"]["blind|iid"] is None
    text = (tmp_path / "sweep.md").read_text()
    assert "| unfit | iid | 0 | not converged |" in text
    assert "| blind | iid | nothing clearly: not counted | - |" in text


def test_markdown_tables_show_percentages():
    entries = aggregate(_band([_row("retrain", 0, 0.98, 0.97), _row("distill", 0, 0.9, 0.9)]))
    table = markdown(entries, [("end.test_accuracy", "test", 100.0)])
    assert "| random-4% | iid | distill | 90.00 ± 0.00 |" in table
    checks = checks_markdown(acceptance(entries, "distill"))
    assert "FAIL" in checks


def test_the_compare_files_show_the_metrics_after_the_later_rounds():
    from fedforget.report.comparison import durability_table, markdown_table, phase_columns

    rows = [
        {"strategy": "original", "test_accuracy": 0.9, "backdoor_success": 1.0},
        {
            "strategy": "fast",
            "test_accuracy": 0.8,
            "backdoor_success": 0.02,
            "end.test_accuracy": 0.9,
            "end.backdoor_success": 0.6,
            "bytes_to_clients": 2_500_000,
            "seconds": 1.25,
        },
    ]
    assert phase_columns(rows) == ["end.test_accuracy", "end.backdoor_success"]
    table = durability_table(rows)
    assert "| fast | 80.00 | 90.00 | 2.00 | 60.00 |" in table  # the backdoor came back
    assert "original" not in table
    assert durability_table([{"strategy": "fast", "test_accuracy": 0.8}]) == ""
    assert "| 2.50 |" in markdown_table(rows)  # MB sent to the clients


def test_the_sweep_shows_the_mia_with_its_mean_power_or_no_power():
    def entries(powers):
        rows = [
            _row(
                "distill",
                seed,
                0.97,
                0.9,
                **{"after_recovery.mia_success": share, "after_recovery.mia_power": power},
            )
            for seed, (share, power) in enumerate(zip((0.30, 0.34), powers, strict=True))
        ]
        return aggregate(rows)

    column = [("after_recovery.mia_success", "MIA", 100.0)]
    assert "| 32.0 ± 2.8 % (power 0.75) |" in markdown(entries((0.7, 0.8)), column)
    assert "| no power (0.52) |" in markdown(entries((0.5, 0.54)), column)
