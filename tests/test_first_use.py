"""A new user's first steps with the command line (issue 15): what they type must just work.

Short runs in ``requests`` mode, the options every run command shares (``--timeout``,
``--config``), custom data in a folder of client files. ``run-config`` prints the resolved
configuration without running anything, so these checks take milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedforget.cli import _simulate_params, config_from_options, main
from fedforget.config import SimulationConfig


def _resolved(capsys: pytest.CaptureFixture[str], *args: str) -> SimulationConfig:
    """The configuration ``fedforget run-config ARGS`` prints."""
    main(["run-config", *args])
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("fedforget-config='") and printed.endswith("'")
    return SimulationConfig.from_json(printed.removeprefix("fedforget-config='")[:-1])


@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_requests_mode_takes_the_requests_after_round_one_on_any_run_length(
    capsys: pytest.CaptureFixture[str], rounds: int
) -> None:
    config = _resolved(capsys, "--mode", "requests", "--clients", "3", "--rounds", str(rounds))
    assert config.deletion.round == 1
    assert '"round":7' not in config.to_json()


def test_an_explicit_deletion_round_is_kept_in_every_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _resolved(capsys, "--mode", "requests", "--deletion-round", "3").deletion.round == 3
    assert _resolved(capsys).deletion.round == 7  # the simulated modes' default stays


def test_simulate_help_lists_requests_mode_timeout_and_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import typer

    from fedforget.cli import app

    main(["simulate", "--help"])
    shown = capsys.readouterr().out
    assert "--timeout" in shown and "--config" in shown
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    helps = {p.name: p.help for p in command.params}
    assert "| requests" in helps["mode"]


def test_timeout_is_an_option_of_every_run_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_from_options(_simulate_params(["--timeout", "12.5"])).message_timeout == 12.5
    assert _resolved(capsys, "--timeout", "30").message_timeout == 30.0
    assert _resolved(capsys).message_timeout == 3600.0


def _client_folder(folder: Path, clients: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"client_{i}" for i in range(clients)] + ["test"]:
        x = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
        np.savez(folder / f"{name}.npz", x=x, y=np.arange(12) % 4)
    return folder


def test_a_folder_of_client_files_sets_the_number_of_clients(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = str(_client_folder(tmp_path / "data", 3))
    config = _resolved(capsys, "--dataset", "npz", "--data-path", folder)
    assert config.clients == 3
    explicit = _resolved(capsys, "--dataset", "npz", "--data-path", folder, "--clients", "3")
    assert explicit.clients == 3
    assert _resolved(capsys, "--dataset", "digits").clients == 20  # the default elsewhere


RUN_TOML = """
clients = 4
strategy = "lau"
seed = 3

[data]
dataset = "digits"
partition = "dirichlet"
alpha = 0.3

[deletion]
mode = "class"
forget_classes = [3]
round = 2

[train]
rounds = 3
local_epochs = 1

[recovery]
max_hops = 1

[methods.options.lau]
alpha = 0.5
"""

SAME_AS_OPTIONS = [
    "--clients", "4", "--strategy", "lau", "--seed", "3", "--dataset", "digits",
    "--partition", "dirichlet", "--alpha", "0.3", "--mode", "class", "--forget-class", "3",
    "--deletion-round", "2", "--rounds", "3", "--local-epochs", "1", "--max-hops", "1",
    "--option", "lau.alpha=0.5",
]  # fmt: skip


def test_a_config_file_resolves_to_the_same_config_as_the_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "run.toml").write_text(RUN_TOML)
    from_file = _resolved(capsys, "--config", str(tmp_path / "run.toml"))
    from_options = _resolved(capsys, *SAME_AS_OPTIONS)
    assert from_file == from_options
    assert from_file.methods.options == {"lau": {"alpha": 0.5}}
    assert from_file != _resolved(capsys)  # the file did set something


def test_options_override_the_config_file_and_the_rest_stays(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "run.toml").write_text(RUN_TOML)
    args = ["--config", str(tmp_path / "run.toml"), "--rounds", "5"]
    args += ["--option", "lau.temperature=2"]
    config = _resolved(capsys, *args)
    assert config.train.rounds == 5 and config.train.local_epochs == 1
    assert config.deletion.forget_classes == [3] and config.clients == 4
    assert config.methods.options == {"lau": {"alpha": 0.5, "temperature": 2}}
    share = _resolved(capsys, "--config", str(tmp_path / "run.toml"), "--delete", "64")
    assert share.deletion.count == 64 and share.deletion.mode == "class"


def test_a_runs_summary_reruns_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(RUN_TOML)
    original = _resolved(capsys, "--config", str(tmp_path / "run.toml"))
    summary = {"strategy": "lau", "config": json.loads(original.to_json())}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert _resolved(capsys, "--config", str(tmp_path / "summary.json")) == original


def test_compare_and_sweep_read_the_config_file_too(tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(RUN_TOML)
    params = _simulate_params(["--config", str(tmp_path / "run.toml"), "--seed", "5"])
    config = config_from_options(params)
    assert (config.clients, config.seed, config.strategy) == (4, 5, "lau")
