"""The README as a new user reads it: its Python blocks run as written, its data format is named.

Every ```` ```python ```` block is run as a script of its own (``__name__ == "__main__"``, a
fresh interpreter, an empty working folder), exactly as a reader who pastes it into a file
would, and must show that it ran: a result printed, or the deletion step in Flower's log.
The blocks are kept digits-sized so that this takes under a minute each. The shell
blocks train MNIST federations for minutes or need a SuperLink and SuperNodes, so their
commands are not run: each is parsed by the CLI as written, and a run command's
configuration is validated with every name it gives checked against the registries.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from fedforget.simulations.runner import WORKER_NICENESS_ENV

README = Path(__file__).resolve().parent.parent / "README.md"
README_LIMIT = 15_000
"""Characters the README may hold; longer material goes to docs/."""
BLOCK_TIMEOUT_S = 600
"""A block that runs this long hangs (each takes about a minute on 2 loaded cores)."""


def _run_as_a_user(argv: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` in ``folder``, in a fresh interpreter, as a reader would run it."""
    # Ray workers started by Flower's own engine would run at nice 15 (docs/architecture.md)
    env = {**os.environ, WORKER_NICENESS_ENV: "0"}
    return subprocess.run(
        [sys.executable, *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )


def python_blocks(text: str) -> list[str]:
    """The code of every ```` ```python ```` block of ``text``, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_python_blocks_that_parse_and_fits_its_limit() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 2
    for block in blocks:
        ast.parse(block)
    assert len(text) < README_LIMIT


def test_the_readme_names_what_a_custom_dataset_holds() -> None:
    text = README.read_text(encoding="utf-8")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert f"`{key}`" in text, key
    assert "client_*.npz" in text and "test.npz" in text


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text(encoding="utf-8")))))
def test_every_readme_python_block_runs_as_written(index: int, tmp_path: Path) -> None:
    block = python_blocks(README.read_text(encoding="utf-8"))[index]
    script = tmp_path / f"block{index}.py"
    script.write_text(block, encoding="utf-8")
    done = _run_as_a_user([str(script)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # exit 0 is not enough: a ServerApp defined and never run also exits 0, doing nothing
    ran_a_deletion = re.search(r"deletion: step of round \d+ done", done.stderr)
    assert ran_a_deletion or done.stdout.strip(), "the block ran nothing"


def shell_commands(text: str) -> list[str]:
    """Every ``fedforget ...`` command of the README's shell blocks, comments cut off."""
    blocks = re.findall(r"^```(?:bash|sh|shell)?\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    found = re.findall(r"fedforget [^\n#\")]*", "\n".join(blocks))  # a $(...) ends at ")"
    return [command.strip() for command in found]


def _parsed(argv: list[str]) -> tuple[str, dict]:
    """The subcommand and its options as the CLI parses ``argv`` (nothing runs)."""
    import click
    import typer

    from fedforget.cli.app import app

    command: click.Command = typer.main.get_command(app)
    context = command.make_context("fedforget", list(argv))
    while isinstance(command, click.Group):
        rest = [*context._protected_args, *context.args]
        name, command, rest = command.resolve_command(context, rest)
        context = command.make_context(name, rest, parent=context)
    return command.name, context.params


RUN_TOML = "[train]\nrounds = 3\n\n[deletion]\nround = 2\n"
"""The ``run.toml`` the README's ``--config`` line reads (the sections of summary.json's config)."""


def test_every_readme_command_parses_and_its_configuration_is_valid(tmp_path, monkeypatch):
    """The shell blocks train MNIST for minutes or need a deployment, so they are not run:
    each command's flags and values are parsed by the CLI as written, and a run command's
    configuration is validated with its names checked (a renamed flag, a changed value
    format or an unknown name in the README fails here)."""
    from fedforget.cli.options import config_from_options

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(RUN_TOML)
    commands = shell_commands(README.read_text(encoding="utf-8"))
    assert len(commands) >= 20
    checked = set()
    for command in commands:
        name, params = _parsed(shlex.split(command)[1:])
        if name in ("simulate", "compare", "sweep", "run-config"):
            _check_names(name, params, config_from_options(params))
            checked.add(name)
    assert checked == {"simulate", "compare", "sweep", "run-config"}


def _check_names(command: str, params: dict, config) -> None:
    """The registry checks the command makes before it runs: its strategies, scenarios."""
    from fedforget.simulations.compare import parse_strategies
    from fedforget.simulations.gan import parse_gan_strategies
    from fedforget.simulations.runner import check_gan_strategies, check_names, check_strategies
    from fedforget.simulations.sweep import PARTITIONS, SCENARIOS, parse_names

    check_names(config)
    listed = params.get("strategies")
    if command == "compare" and config.task == "gan":
        check_gan_strategies(config, parse_gan_strategies(listed or "cascaded,retrain"))
    elif command in ("compare", "sweep"):
        check_strategies(config, parse_strategies(listed or "distill,retrain"))
    if command == "sweep":
        parse_names(params.get("scenarios"), SCENARIOS, (), "scenario")
        parse_names(params.get("partitions"), PARTITIONS, (), "partition")


NOT_RUN = {
    "--ray-address": "needs a Ray head node (tests/test_ray_cluster.py starts one)",
    "verify": "needs a run's models (tests/test_verify_first_use.py runs the README's form)",
    "request-deletion": "a node's command (tests/test_deployment.py files requests)",
    "run-config": "prints a deployment's configuration (parsed and validated above)",
    "--verify": "a GAN per verifying client (tests/test_simulation.py, small Skyeye settings)",
}
"""README commands not run here, by a word they hold, and where they are run instead."""
DEFAULT_SWEEP = "fedforget sweep"
"""The default matrix: hours on MNIST; its scenarios' cells run in the README's next line."""


def runnable_commands() -> list[str]:
    """The README's run commands that this machine can play on digits-sized settings."""
    commands = shell_commands(README.read_text(encoding="utf-8"))
    return [
        c
        for c in commands
        if c != DEFAULT_SWEEP and not any(word in shlex.split(c) for word in NOT_RUN)
    ]


def shortened(args: list[str], out: Path) -> list[str]:
    """``args`` as written, plus digits and few rounds for every setting they leave open."""
    args = list(args)
    if "--out" in args:  # the README's folder, moved under the test's
        args[args.index("--out") + 1] = str(out)
    else:
        args += ["--out", str(out)]
    given = set(args)
    extra = ["--quiet"]
    if "--dataset" not in given and "--config" not in given:
        extra += ["--dataset", "digits"]
    if "--deletion-round" in given:
        rounds = args[args.index("--deletion-round") + 1].replace("/", ",").split(",")
        last = max(int(r) for r in rounds)
    else:
        last = 2
        extra += ["--deletion-round", "2"]
    if "--rounds" not in given and "--config" not in given:
        extra += ["--rounds", str(last + 1)]
    command = args[0]
    if command == "simulate" and "--reference" not in given:
        extra += ["--reference", "none"]
    if command == "compare" and "gan" not in given:  # a GAN comparison has no later rounds
        extra += ["--after-rounds", "1"]
    if command == "sweep":
        extra += ["--reference-seeds", "1"]
    return [*args, *extra]


def _user_files(folder: Path) -> None:
    """The files the README's commands name: a digits-sized ``.npz``, a folder of client
    files, a ``run.toml``."""
    digits = load_digits()
    x, y = (digits.images / 16).astype(np.float32), digits.target
    train, test = np.arange(1400), np.arange(1400, len(y))
    np.savez(folder / "my_data.npz", x_train=x[train], y_train=y[train], x_test=x[test],
             y_test=y[test])  # fmt: skip
    clients = folder / "clients"
    clients.mkdir()
    for i, part in enumerate(np.array_split(train, 5)):
        np.savez(clients / f"client_{i}.npz", x=x[part], y=y[part])
    np.savez(clients / "test.npz", x=x[test], y=y[test])
    (folder / "run.toml").write_text('[data]\ndataset = "digits"\n\n' + RUN_TOML)


@pytest.mark.slow
def test_every_readme_run_command_runs_on_short_settings(tmp_path: Path) -> None:
    """Each ``simulate``/``compare``/``sweep`` line as written, on digits and few rounds
    where it leaves them open: exit 0 and the run's files (issue 36's fresh reader)."""
    _user_files(tmp_path)
    commands = runnable_commands()
    assert len(commands) >= 15
    for index, command in enumerate(commands):
        out = tmp_path / f"run{index}"
        argv = shortened(shlex.split(command)[1:], out)
        done = _run_as_a_user(["-m", "fedforget.cli", *argv], tmp_path)
        assert done.returncode == 0, (command, argv, done.stderr[-2000:])
        written = {p.name for p in out.iterdir()}
        results = {"summary.json", "compare.json", "gan_compare.json", "sweep.json"}
        assert written & results, (command, written)
