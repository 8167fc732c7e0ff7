"""``fedforget audit``: the forget-quality test (:mod:`fedforget.simulations.audit`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fedforget.cli.app import app
from fedforget.cli.options import config_from_options, with_run_options
from fedforget.cli.runs import _with_out_dir, check_command

PANEL = "Audit"


@app.command()
@with_run_options
def audit(
    scenarios: Annotated[
        str,
        typer.Option(
            help="Sweep scenarios (comma-separated; fedforget list).", rich_help_panel=PANEL
        ),
    ] = "style-client,mislabeled,overfit-20",
    partitions: Annotated[
        str, typer.Option(help="Sweep partitions (comma-separated).", rich_help_panel=PANEL)
    ] = "iid",
    strategies: Annotated[
        str,
        typer.Option(help="Methods audited beside none (comma-separated).", rich_help_panel=PANEL),
    ] = "distill",
    models: Annotated[
        int,
        typer.Option(
            min=2,
            max=64,
            help="Models per side: trainings of each federation.",
            rich_help_panel=PANEL,
        ),
    ] = 8,
    **options: Any,
) -> None:
    """The forget-quality test of the NeurIPS 2023 unlearning challenge on sweep scenarios.

    Per scenario x partition: trains the scenario's (shrunk) federation --models times from
    other run seeds, the data and D_f fixed by --seed; each time the methods, none and two
    retrains carry out the deletion. F of each method against the first retrains, beside
    the retrain-vs-retrain noise floor: audit.md, audit.json in --out.
    """
    base = config_from_options(options)
    from rich.console import Console

    from fedforget.simulations.audit import audit_config, audit_markdown, run_audit, write_audits
    from fedforget.simulations.compare import compare as run_compare
    from fedforget.simulations.compare import parse_strategies
    from fedforget.simulations.runner import check_run_folder, check_strategies, run_folder
    from fedforget.simulations.sweep import PARTITIONS, SCENARIOS, parse_names

    cells = [
        (scenario, partition)
        for scenario in parse_names(scenarios, SCENARIOS, (), "scenario")
        for partition in parse_names(partitions, PARTITIONS, (), "partition")
    ]
    names = [n for n in parse_strategies(strategies) if n not in ("retrain", "none")]
    base = _with_out_dir(base, "audit")
    check_run_folder(base.out, options["overwrite"])
    for scenario, partition in cells:
        first = audit_config(base, scenario, partition, base.seed, 0, base.out)
        check_strategies(first, ["retrain", "none", *names])
        check_command(first)
    console = Console()
    results = []
    with run_folder(base.out, options["overwrite"]):
        for scenario, partition in cells:
            results.append(
                run_audit(
                    base,
                    scenario,
                    partition,
                    names,
                    base.out / f"{scenario}__{partition}".replace("%", "pct"),
                    lambda config, branches, after: run_compare(
                        config, branches, after_rounds=after
                    ),
                    data_seed=base.seed,
                    models=models,
                    report=console.print,
                )
            )
            write_audits(results, base.out)
    console.print(audit_markdown(results))
    console.print(f"results: [bold]{base.out}[/] (audit.md, audit.json)")
