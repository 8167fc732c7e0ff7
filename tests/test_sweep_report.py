"""The sweep's tables: gaps to retrain, mean +- std over seeds, acceptance checks."""

from __future__ import annotations

import math

import pytest

from fedforget.report.sweep import (
    Stat,
    acceptance,
    add_gaps,
    aggregate,
    checks_markdown,
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


def test_gaps_are_taken_against_retrain_of_the_same_cell():
    rows = [
        _row("retrain", 0, 0.98, 0.97),
        _row("distill", 0, 0.975, 0.90),
        _row("retrain", 1, 0.90, 0.80),
        _row("distill", 1, 0.91, 0.81),
    ]
    gapped = add_gaps(rows)
    assert gapped[1]["gap.end.test_accuracy"] == pytest.approx(-0.005)
    assert gapped[3]["gap.end.test_accuracy"] == pytest.approx(0.01)
    assert gapped[0]["gap.end.test_accuracy"] == 0.0
    assert "gap.seed" not in gapped[1] and "gap.mode" not in gapped[1]


def test_rows_without_retrain_get_no_gaps():
    (row,) = add_gaps([_row("distill", 0, 0.9, 0.9)])
    assert not any(key.startswith("gap.") for key in row)


def test_aggregate_groups_seeds_and_keeps_constant_text():
    rows = add_gaps(
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
    rows = add_gaps(
        [
            _row("retrain", 0, 0.98, 0.97, deletion_rounds=0.0, relay_gain=0.0),
            _row("distill", 0, 0.96, 0.90, deletion_rounds=1.5, relay_gain=-0.01),
        ]
    )
    checks = acceptance(aggregate(rows), "distill")
    failed = {c.criterion for c in checks if not c.passed}
    assert "end test acc - retrain" in failed
    assert "|end D_f acc - retrain|" in failed
    assert "(unlearning + recovery) / round" in failed
    assert "relay change of test acc (min)" in failed
    good = add_gaps(
        [
            _row("retrain", 0, 0.98, 0.97, deletion_rounds=0.0, relay_gain=0.0),
            _row("distill", 0, 0.978, 0.965, deletion_rounds=0.4, relay_gain=0.02),
        ]
    )
    assert all(c.passed for c in acceptance(aggregate(good), "distill"))


def test_markdown_tables_show_percentages():
    entries = aggregate(add_gaps([_row("retrain", 0, 0.98, 0.97), _row("distill", 0, 0.9, 0.9)]))
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
