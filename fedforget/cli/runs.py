"""The run commands: simulate, compare, sweep and run-config, on one option set.

Each builds its configuration from the same options (:mod:`fedforget.cli.options`) and
checks it with the same function, :func:`check_command`, before anything runs: names (after
the plugins loaded), paths, this machine's resources, the data and the model.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fedforget.cli.app import app
from fedforget.cli.options import config_from_options, with_run_options
from fedforget.config import (
    MAX_ROUNDS,
    ConfigError,
    SimulationConfig,
    check_local_paths,
    check_resources,
)


def check_command(config: SimulationConfig, *, deployment: bool = False) -> None:
    """Every check of a run command before anything runs; the same for all four commands.

    Paths and this machine's resources, then :func:`fedforget.simulations.runner.check_run`
    (names, device, data, model). A deployment's configuration (``run-config``) whose nodes
    hold the data and file the requests has no data here: its names and paths are checked.
    """
    from fedforget.simulations.runner import check_names, check_run

    check_local_paths(config)
    check_resources(config)
    if deployment and config.deletion_mode.node_side:  # the nodes hold data and requests
        check_names(config)
        return
    check_run(config)
    if config.task == CLASSIFIER_TASK:
        check_model_takes_the_images(config)


CLASSIFIER_TASK = "classify"


def derived_training(config: SimulationConfig) -> SimulationConfig:
    """``config`` with its training settings resolved; one stderr line says what the data
    decided (a user who did not choose them sees what their run trains with)."""
    if config.task != CLASSIFIER_TASK or config.train.is_resolved:
        return config
    from fedforget.data import resolve_training

    train = resolve_training(config).train
    typer.echo(
        f"training: batch {train.batch_size}, {train.local_epochs} local epochs, derived from "
        "the clients' data (--batch-size, --local-epochs choose them)",
        err=True,
    )
    return config.model_copy(update={"train": train})


def check_model_takes_the_images(config: SimulationConfig) -> None:
    """Run two blank images of the data's shape through the model, here, before Ray.

    A model that cannot take the data's images (4x4 pixels through LeNet-5's layers) would
    otherwise fail on every client, as a traceback from Ray, after the actors started.
    """
    import torch

    from fedforget.data import build_federation
    from fedforget.models import build_model

    federation = build_federation(config)
    channels, side = federation.in_channels, federation.image_size
    try:
        model = build_model(config.model, federation.num_classes, channels, side).eval()
        with torch.no_grad():
            model(torch.zeros(2, channels, side, side))
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model {config.model} cannot take the data's {channels}x{side}x{side} images "
            f"({reason})"
        ) from None


@app.command()
@with_run_options
def simulate(**options: Any) -> None:
    """Run a federation that learns, receives deletion requests, unlearns and recovers."""
    config = config_from_options(options)  # a mistake is said before the heavy imports
    from rich.console import Console

    from fedforget.report.display import RichDisplay, phase_table, timing_table
    from fedforget.simulations.gan import gan_phase_table
    from fedforget.simulations.runner import check_run_folder, run_folder, simulate

    config = _with_out_dir(config)
    check_run_folder(config.out, options["overwrite"])
    check_command(config)
    config = derived_training(config)
    console = Console()
    display = None if options["quiet"] else RichDisplay(console)
    with run_folder(config.out, options["overwrite"]):
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
    for line in summary.warnings:  # also with --quiet: they say what the numbers are worth
        typer.echo(f"warning: {line}", err=True)


def _with_out_dir(config: SimulationConfig, label: str | None = None) -> SimulationConfig:
    """``config`` with its run folder fixed now (``runs/<time>-<label>-<mode>`` by default)."""
    from fedforget.server.app import default_out_dir

    named = config if label is None else config.model_copy(update={"strategy": label})
    return config.model_copy(update={"out": default_out_dir(named)})


@app.command()
@with_run_options
def compare(
    strategies: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strategy names, or 'all' (default: distill,retrain; "
            "cascaded,retrain with --task gan).",
            rich_help_panel="Comparison",
        ),
    ] = None,
    after_rounds: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=MAX_ROUNDS,
            help="FedAvg rounds each branch continues after its deletion (default 3; 0: none); "
            "the table then also holds after_unlearning.* and end.* metrics (does the "
            "forgetting last?).",
            rich_help_panel="Comparison",
        ),
    ] = None,
    **options: Any,
) -> None:
    """Branch several strategies from one checkpoint and compare them in one table.

    Every option of `fedforget simulate` applies (dataset, clients, --delete, --mode,
    --forget-class, --option NAME.KEY=VALUE, --out, --quiet, ...). The federation trains once
    up to the deletion round; each strategy then carries out the same deletion from there.
    """
    config = config_from_options(options)
    from rich.console import Console

    from fedforget.report.display import RichDisplay, comparison_table
    from fedforget.simulations.branching import check_single_deletion
    from fedforget.simulations.compare import DEFAULT_AFTER_ROUNDS, parse_strategies
    from fedforget.simulations.compare import compare as run_compare
    from fedforget.simulations.runner import (
        check_model_parts,
        check_run_folder,
        check_strategies,
        run_folder,
    )

    quiet, overwrite = options["quiet"], options["overwrite"]
    if strategies is not None and not strategies.replace(",", "").strip():
        raise ConfigError("--strategies needs at least one strategy name")
    if config.task == "gan":
        if after_rounds:  # the GAN task has no later phases: only an explicit N > 0 is refused
            raise ConfigError("--after-rounds applies to classifier comparisons, not --task gan")
        _compare_gan(config, strategies or "cascaded,retrain", quiet, overwrite)
        return
    names = parse_strategies(strategies or "distill,retrain")
    if after_rounds is None:
        after_rounds = DEFAULT_AFTER_ROUNDS
    config = _with_out_dir(config, "compare")
    check_single_deletion(config)
    check_run_folder(config.out, overwrite)
    check_command(config)
    check_strategies(config, names)
    check_model_parts(config, names)
    config = derived_training(config)
    console = Console()
    display = None if quiet else RichDisplay(console)
    with run_folder(config.out, overwrite):
        if display is None:
            result = run_compare(config, names, after_rounds=after_rounds)
        else:
            with display:
                result = run_compare(config, names, display, after_rounds)
    console.print(comparison_table(result.rows, config.deletion.mode))
    console.print(f"results: [bold]{result.out_dir}[/] (compare.csv, .json, .md, .png)")
    for finding in result.findings:
        typer.echo(f"warning: {finding['name']} ({finding['row']}): {finding['message']}", err=True)


def _compare_gan(config: SimulationConfig, strategies: str, quiet: bool, overwrite: bool) -> None:
    from rich.console import Console

    from fedforget.report.display import RichDisplay
    from fedforget.simulations.gan import gan_compare, gan_table, parse_gan_strategies
    from fedforget.simulations.runner import check_gan_strategies, check_run_folder, run_folder

    names = parse_gan_strategies(strategies)
    config = _with_out_dir(config, "gan-compare")
    check_run_folder(config.out, overwrite)
    check_command(config)
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


@app.command()
@with_run_options
def sweep(
    scenarios: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated scenarios (default: backdoor-6%,class-3,style-client,"
            "mislabeled,overfit-20; also random-4%, client-5, overfit-random). See "
            "`fedforget list`.",
            rich_help_panel="Sweep",
        ),
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated partitions (default: iid,dirichlet-0.3; also dirichlet-0.1, "
            "shards-2).",
            rich_help_panel="Sweep",
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds (default 0,1,2).", rich_help_panel="Sweep"),
    ] = None,
    strategies: Annotated[
        str,
        typer.Option(
            help="Strategies besides retrain (comma-separated, or 'all').",
            rich_help_panel="Sweep",
        ),
    ] = "distill",
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue an earlier sweep in --out: cells it finished with the same "
            "configuration and strategies are read back, the rest run.",
            rich_help_panel="Sweep",
        ),
    ] = False,
    **options: Any,
) -> None:
    """Run a matrix of scenarios x partitions x seeds, each against a retrain of the same seed.

    Every option of `fedforget simulate` sets the base of every cell (dataset, clients,
    rounds, --deletion-round, --option ...); a scenario sets the deletion, a partition the
    split. Each cell trains once to the deletion round, branches retrain and the strategies,
    and continues FedAvg to the last round. Writes sweep.csv (a row per cell and strategy,
    gaps to retrain), sweep.md (mean ± std over seeds, acceptance checks), sweep.json, sweep.png.
    """
    base = config_from_options(options)
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

    quiet = options["quiet"]
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
    reuse_folder = options["overwrite"] or resume
    check_run_folder(base.out, reuse_folder)
    for cell in cells:
        check_strategies(cell_config(base, cell, base.out), ["retrain", *names])
    check_command(base)
    console = Console()

    def run_cell(config: SimulationConfig, branch_names: list[str], after: int):
        if quiet:
            return run_compare(config, branch_names, after_rounds=after)
        display = RichDisplay(console)
        with display:
            return run_compare(config, branch_names, display, after)

    with run_folder(base.out, reuse_folder):
        payload = run_sweep(base, cells, names, base.out, run_cell, console.print, resume)
    failed = sum(not check["passed"] for check in payload["checks"])
    blind = sum(check is None for check in payload["discriminative"].values())
    console.print(
        f"sweep: {len(cells)} cells in {payload['seconds']:.0f} s; "
        f"{len(payload['checks']) - failed} checks passed, {failed} failed "
        f"(discriminative cells only); {len(payload['unfit_cells'])} cells unfit for comparison, "
        f"{blind} of {len(payload['discriminative'])} scenario x partition not discriminative "
        "(sweep.md says which)"
    )
    console.print(f"results: [bold]{base.out}[/] (sweep.csv, .md, .json, .png)")


@app.command("run-config")
@with_run_options
def run_config(**options: Any) -> None:
    """Print the --run-config for `flwr run` from the options of `fedforget simulate`.

    One configuration model for both ways of running: for example
    `flwr run . my-deployment --run-config "$(fedforget run-config --mode requests --clients 3)"`.
    The configuration is checked here as `simulate` checks it (names, paths, data, model),
    so mistakes surface before the run is submitted; with --mode requests the nodes hold the
    data, and names and paths are checked.
    """
    config = config_from_options(options)
    check_command(config, deployment=True)
    typer.echo(run_config_argument(config))


def run_config_argument(config: SimulationConfig) -> str:
    """The ``--run-config`` value of ``flwr run`` that carries ``config``."""
    text = config.to_json()
    if "'" in text:
        raise ConfigError("the configuration holds a single quote, which --run-config cannot carry")
    return f"fedforget-config='{text}'"


def _simulate_params(args: list[str]) -> dict[str, Any]:
    """Parse ``args`` as options of ``simulate`` (options not given are None)."""
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    with command.make_context("fedforget simulate", list(args)) as context:
        return dict(context.params)
