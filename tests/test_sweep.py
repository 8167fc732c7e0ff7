"""fedforget sweep: the matrix, each cell's configuration, rows, files; a tiny real sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedforget.config import ConfigError, SimulationConfig
from fedforget.simulations.branching import Comparison
from fedforget.simulations.sweep import (
    SCENARIOS,
    Cell,
    cell_config,
    parse_names,
    parse_seeds,
    run_sweep,
)


def _base(**values) -> SimulationConfig:
    return SimulationConfig.model_validate(
        {"clients": 6, "data": {"dataset": "digits"}, "train": {"rounds": 3}, **values}
    )


def test_cell_config_applies_scenario_partition_and_seed(tmp_path: Path):
    base = _base(deletion={"round": 2})
    config = cell_config(base, Cell("client-5", "dirichlet-0.3", 2), tmp_path)
    assert config.deletion.mode == "client"
    assert config.deletion.deleting_clients == [5]
    assert config.deletion.round == 2
    assert (config.data.partition, config.data.alpha) == ("dirichlet", 0.3)
    assert config.seed == 2
    assert config.out == tmp_path / "cells" / "client-5__dirichlet-0.3__seed2"
    assert config.data.dataset == "digits"


def test_the_overfit_scenario_uses_the_calibrated_attack_unless_told_otherwise(tmp_path: Path):
    cell = Cell("overfit-random", "iid", 0)
    config = cell_config(_base(deletion={"round": 2}), cell, tmp_path)
    assert config.mia == "calibrated" and config.deletion.round < config.train.rounds
    told = _base(deletion={"round": 2}, mia="loss")
    assert cell_config(told, cell, tmp_path).mia == "loss"


def test_a_shards_cell_trains_with_the_partitions_defaults_where_the_user_set_none(
    tmp_path: Path,
):
    base = SimulationConfig.model_validate({"data": {"dataset": "digits"}})
    config = cell_config(base, Cell("backdoor-6%", "shards-2", 0), tmp_path)
    assert (config.train.lr, config.train.rounds, config.deletion.round) == (0.02, 23, 20)
    told = SimulationConfig.model_validate({"train": {"lr": 0.05, "rounds": 12}})
    config = cell_config(told, Cell("backdoor-6%", "shards-2", 0), tmp_path)
    assert (config.train.lr, config.train.rounds, config.deletion.round) == (0.05, 12, 7)
    assert cell_config(base, Cell("backdoor-6%", "iid", 0), tmp_path).train.lr == 0.05


def test_a_cell_that_cannot_run_is_one_clear_error(tmp_path: Path):
    base = SimulationConfig.model_validate({"clients": 4, "data": {"dataset": "digits"}})
    with pytest.raises(ConfigError, match=r"scenario client-5 on iid: .*deleting clients"):
        cell_config(base, Cell("client-5", "iid", 0), tmp_path)


def test_names_and_seeds_are_parsed_and_checked():
    assert parse_names(None, SCENARIOS, ("class-3",), "scenario") == ["class-3"]
    assert parse_names("class-3, random-4%", SCENARIOS, (), "scenario") == [
        "class-3",
        "random-4%",
    ]
    with pytest.raises(ConfigError, match="unknown scenario"):
        parse_names("class-4", SCENARIOS, (), "scenario")
    assert parse_seeds("0,2") == [0, 2]
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("a")


def _fake_cell(config: SimulationConfig, strategies: list[str], after_rounds: int) -> Comparison:
    """A comparison with made-up numbers that depend on the seed (no Flower)."""
    shift = 0.01 * config.seed
    rows = [{"strategy": "original", "test_accuracy": 0.9}]
    details = {}
    for i, name in enumerate(strategies):
        rows.append(
            {
                "strategy": name,
                "test_accuracy": 0.95 - 0.01 * i + shift,
                "forget_accuracy": 0.9,
                "mia_success": 0.5,
                "seconds": 1.0,
                "after_unlearning.test_accuracy": 0.9,
                "end.test_accuracy": 0.96 - 0.01 * i + shift,
                "end.forget_accuracy": 0.9 - 0.05 * i,
            }
        )
        details[name] = {
            "unlearning_seconds": 1.0,
            "recovery_seconds": 1.0,
            "relay_hops": i,
            "round_seconds": [20.0, 4.0, 4.0],  # the first round starts the actors
        }
    assert after_rounds == config.train.rounds - config.deletion.round
    return Comparison(rows, config.out, {}, 1.0, details)


def test_run_sweep_writes_rows_gaps_and_checks(tmp_path: Path):
    base = _base(deletion={"round": 2})
    cells = [Cell("random-4%", "iid", seed) for seed in (0, 1)]
    lines: list[str] = []
    payload = run_sweep(base, cells, ["distill"], tmp_path, _fake_cell, lines.append)
    assert len(lines) == 2 and lines[0].startswith("cell 1/2 random-4pct__iid__seed0")
    rows = payload["rows"]
    assert len(rows) == 6  # retrain, distill and none in two cells
    distill = [r for r in rows if r["strategy"] == "distill"]
    assert distill[0]["gap.end.test_accuracy"] == pytest.approx(-0.01)
    assert distill[0]["deletion_rounds"] == pytest.approx(0.5)
    assert distill[0]["relay_gain"] == pytest.approx(0.04)
    assert distill[0]["mode"] == "random"
    for name in ("sweep.csv", "sweep.md", "sweep.json", "sweep.png"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "sweep.md").read_text()
    assert "| random-4% | iid | distill |" in md
    assert "FAIL" in md  # D_f is 5 pt away from retrain's in the fake numbers
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert len(saved["rows"]) == 6 and saved["checks"]


def test_resume_reads_back_only_the_cells_an_earlier_sweep_finished_with_this_config(
    tmp_path: Path,
):
    ran: list[tuple[str, tuple[str, ...]]] = []

    def saving_cell(config: SimulationConfig, strategies: list[str], after: int) -> Comparison:
        ran.append((Path(config.out).name, tuple(strategies)))
        result = _fake_cell(config, strategies, after)
        Path(config.out).mkdir(parents=True, exist_ok=True)
        saved = {"rows": result.rows, "details": result.details, "base_seconds": 1.0}
        saved["config"] = json.loads(config.to_json())
        (Path(config.out) / "compare.json").write_text(json.dumps(saved))
        return result

    base = _base(deletion={"round": 2}, reference_seeds=1)  # the fake cell runs no band
    cells = [Cell("random-4%", "iid", seed) for seed in (0, 1)]
    first = run_sweep(base, cells[:1], ["distill"], tmp_path, saving_cell)
    (tmp_path / "cells" / cells[1].name).mkdir()  # an interrupted cell: no compare.json
    ran.clear()
    lines: list[str] = []
    resumed = run_sweep(base, cells, ["distill"], tmp_path, saving_cell, lines.append, True)
    assert ran == [(cells[1].name, ("retrain", "distill", "none"))]
    assert "read from an earlier sweep" in lines[0]
    assert resumed["rows"][:3] == first["rows"]
    ran.clear()
    run_sweep(base, cells, ["distill", "fedrecovery"], tmp_path, saving_cell, resume=True)
    assert len(ran) == 2  # a strategy the earlier cells did not run
    ran.clear()
    changed = _base(deletion={"round": 2}, train={"rounds": 4}, reference_seeds=1)
    run_sweep(changed, cells, ["distill"], tmp_path, saving_cell, resume=True)
    assert len(ran) == 2  # another configuration
    ran.clear()
    run_sweep(changed, cells, ["distill"], tmp_path, saving_cell)
    assert len(ran) == 2  # without resume every cell runs


def test_every_cell_is_validated_before_the_first_runs(tmp_path: Path):
    base = SimulationConfig.model_validate({"clients": 4, "data": {"dataset": "digits"}})
    calls = []
    cells = [Cell("class-3", "iid", 0), Cell("client-5", "iid", 0)]
    with pytest.raises(ConfigError):
        run_sweep(base, cells, ["distill"], tmp_path, lambda *a: calls.append(a))
    assert not calls


@pytest.mark.slow
def test_a_tiny_sweep_runs_end_to_end(tmp_path: Path, make_config):
    """One cell on digits through Flower: retrain, distill and none, three phases, the files."""
    from fedforget.simulations.compare import compare

    base = make_config(
        train={"rounds": 4, "local_epochs": 3}, deletion={"round": 3}, reference_seeds=2
    )
    cells = [Cell("class-3", "iid", 0)]

    def run_cell(config, strategies, after_rounds):
        return compare(config, strategies, after_rounds=after_rounds)

    payload = run_sweep(base, cells, ["distill"], tmp_path, run_cell)
    rows = {row["strategy"]: row for row in payload["rows"]}
    assert set(rows) == {"retrain", "distill", "none"}
    for row in rows.values():
        for phase in ("after_unlearning", "after_recovery", "end"):
            assert 0.0 <= row[f"{phase}.test_accuracy"] <= 1.0
        assert row["end.forget_test_accuracy"] is not None
        assert row["round_seconds"] > 0
    distill = rows["distill"]
    assert distill["after_recovery.forget_test_accuracy"] <= 0.05  # class 3 was unlearned
    band = [r["end.test_accuracy"] for r in payload["rows"] if r["strategy"] == "retrain"]
    assert len(band) == 2  # the gap is to the band's mean
    assert distill["gap.end.test_accuracy"] == pytest.approx(
        distill["end.test_accuracy"] - sum(band) / len(band)
    )
    assert distill["deletion_rounds"] == pytest.approx(
        (distill["unlearning_seconds"] + distill["recovery_seconds"]) / distill["round_seconds"]
    )
    assert (tmp_path / "cells" / "class-3__iid__seed0" / "compare.json").is_file()
    assert "| class-3 | iid | distill |" in (tmp_path / "sweep.md").read_text()

    def must_not_run(*_args):
        raise AssertionError("resume ran a finished cell again")

    resumed = run_sweep(base, cells, ["distill"], tmp_path, must_not_run, resume=True)
    assert resumed["rows"] == payload["rows"]
