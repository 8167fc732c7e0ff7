"""The run commands' options come from the configuration's fields, and mean what they meant.

Every field has an option (help from its description), the four run commands share the set,
command lines resolve to the configurations they always did (the expected values were
recorded with the hand-written flag map this replaced), distill's options live where every
method's do, a key in the wrong section says where it belongs, and a plugin's model passes
the name check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from fedforget.cli import _simulate_params, app, config_from_options, main
from fedforget.config import ConfigError, SimulationConfig, validate_config
from fedforget.unlearning import DistillSettings, configured_unlearner

RUN_COMMANDS = ("simulate", "compare", "sweep", "run-config")


def _command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def _flags(name: str) -> set[str]:
    return {flag for param in _command(name).params for flag in param.opts + param.secondary_opts}


def test_the_run_commands_share_one_option_set() -> None:
    simulate = _flags("simulate")
    assert _flags("run-config") == simulate
    assert simulate <= _flags("compare") and simulate <= _flags("sweep")
    assert {"--timeout", "--config", "--unlearn-epochs", "--option", "--relay-lr"} <= simulate


def test_run_config_help_lists_what_it_takes(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run-config", "--help"])
    shown = capsys.readouterr().out
    for flag in ("--dataset", "--forget-class", "--deletion-round", "--option", "--seed"):
        assert flag in shown, flag


def _field_paths() -> list[str]:
    paths = []
    for name, field in SimulationConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and hasattr(section, "model_fields"):
            paths += [f"{name}.{sub}" for sub in section.model_fields]
        else:
            paths.append(name)
    return paths


def test_every_field_has_an_option_and_a_description() -> None:
    from fedforget.cli.options import RUN_OPTIONS

    described = {"deletion.mode"}  # the mode's words are the --mode option's (it has an alias)
    for path in _field_paths():
        section, _, name = path.rpartition(".")
        model = SimulationConfig.model_fields[section].annotation if section else SimulationConfig
        assert path in described or model.model_fields[name].description, path
    # each field is set by an option: its value arrives at the field's place
    covered = set()
    for option in RUN_OPTIONS:
        values: dict[str, Any] = {}
        sample = {int: 3, float: 0.5, str: "x", bool: True, Path: Path("p")}[option.kind]
        given = [sample] if option.multiple else sample
        if option.name == "delete":
            given = "6%"
        elif option.name in ("deleting_clients", "deletion_round"):
            given = "1"
        elif option.name == "option":
            given = ["a.b=1"]
        option.put(values, given, "distill")
        covered |= {
            f"{key}.{sub}" if isinstance(value, dict) else key
            for key, value in values.items()
            for sub in (value if isinstance(value, dict) else [None])
        }
    assert set(_field_paths()) <= covered, sorted(set(_field_paths()) - covered)


def _args(line: str) -> list[str]:
    return line.split()


# (command line, the fields that differ from the defaults, distill's settings that differ)
COMMAND_LINES: list[tuple[str, list[str], dict[str, Any], dict[str, Any]]] = [
    ("defaults", [], {}, {}),
    (
        "digits random count",
        _args(
            "--dataset digits --clients 4 --rounds 3 --deletion-round 2 --delete 64 --mode "
            "random --seed 5"
        ),
        {
            "clients": 4,
            "data.dataset": "digits",
            "deletion.count": 64,
            "deletion.mode": "random",
            "deletion.round": 2,
            "seed": 5,
            "train.rounds": 3,
        },
        {},
    ),
    (
        "class lau dirichlet",
        _args(
            "--mode class --forget-class 3 --forget-class 5 --dataset digits --partition "
            "dirichlet --alpha 0.3 --strategy lau --option lau.alpha=0.5 --option epochs=2"
        ),
        {
            "data.alpha": 0.3,
            "data.dataset": "digits",
            "data.partition": "dirichlet",
            "deletion.forget_classes": [3, 5],
            "deletion.mode": "class",
            "methods.options": {"lau": {"alpha": 0.5, "epochs": 2}},
            "strategy": "lau",
        },
        {},
    ),
    (
        "sequential client steps",
        _args(
            "--mode client --deleting-clients 1/2,3 --deletion-round 2,3 --rounds 4 --clients "
            "4 --dataset digits"
        ),
        {
            "clients": 4,
            "data.dataset": "digits",
            "deletion.deleting_clients": [[1], [2, 3]],
            "deletion.mode": "client",
            "deletion.round": [2, 3],
            "train.rounds": 4,
        },
        {},
    ),
    (
        "gan item",
        _args("--task gan --mode item --delete 5% --gan-epochs 2 --gan-clients 1 --dataset digits"),
        {
            "data.dataset": "digits",
            "deletion.mode": "random",
            "deletion.share": 0.05,
            "gan.epochs": 2,
            "gan.generator_clients": 1,
            "strategy": "cascaded",
            "task": "gan",
        },
        {},
    ),
    (
        "distill aliases",
        _args(
            "--unlearn-epochs 3 --unlearn-lr 0.01 --mu-distill 0 --mu-attention 0.5 --mu-hard "
            "0.2 --bound 0 --reg-weight 0.1 --prune-mads 0 --option distill.batch_size=16"
        ),
        {
            "methods.options": {
                "distill": {
                    "batch_size": 16,
                    "bound": None,
                    "epochs": 3,
                    "lr": 0.01,
                    "mu_attention": 0.5,
                    "mu_distill": 0.0,
                    "mu_hard": 0.2,
                    "prune_mads": None,
                    "reg_weight": 0.1,
                }
            }
        },
        {
            "batch_size": 16,
            "bound": None,
            "epochs": 3,
            "lr": 0.01,
            "mu_attention": 0.5,
            "mu_distill": 0.0,
            "mu_hard": 0.2,
            "prune_mads": None,
            "reg_weight": 0.1,
        },
    ),
    (
        "distill bound and pruning",
        ["--bound", "7.5", "--prune-mads", "3", "--option", "distill.epochs=2"],
        {"methods.options": {"distill": {"bound": 7.5, "epochs": 2, "prune_mads": 3.0}}},
        {"bound": 7.5, "epochs": 2, "prune_mads": 3.0},
    ),
    (
        "every section",
        _args(
            "--client-cpus 0.5 --client-gpus 0 --server-device cpu --min-accuracy 0.9 "
            "--max-hops 2 --relay-lr 0.01 --retain-per-client 50 --verify spd "
            "--verify-clients 1 --mia loss --timeout 60 --fraction-train 0.5 --batch-size 16 "
            "--lr 0.02 --local-epochs 1 --reference none --unlearn-on client --model "
            "lenet-att --out runs/x --data-dir cache --num-classes 10 --ray-address auto"
        ),
        {
            "data.data_dir": "cache",
            "data.num_classes": 10,
            "message_timeout": 60.0,
            "methods.retain_per_client": 50,
            "mia": "loss",
            "model": "lenet-att",
            "out": "runs/x",
            "recovery.lr": 0.01,
            "recovery.max_hops": 2,
            "recovery.min_accuracy": 0.9,
            "reference": "none",
            "resources.client_cpus": 0.5,
            "resources.ray_address": "auto",
            "resources.server_device": "cpu",
            "train.batch_size": 16,
            "train.fraction_train": 0.5,
            "train.local_epochs": 1,
            "train.lr": 0.02,
            "unlearn_on": "client",
            "verify.method": "spd",
        },
        {},
    ),
    (
        "requests",
        ["--mode", "requests", "--clients", "3"],
        {"clients": 3, "deletion.mode": "requests", "deletion.round": 1},
        {},
    ),
    (
        "share",
        ["--delete", "0.1", "--deleting-clients", "0,2", "--dataset", "digits"],
        {"data.dataset": "digits", "deletion.deleting_clients": [0, 2], "deletion.share": 0.1},
        {},
    ),
    (
        "config file with an [unlearning] section",
        _args(
            "--config {run.toml} --rounds 5 --delete 64 --unlearn-lr 0.02 --option "
            "lau.temperature=2"
        ),
        {
            "clients": 4,
            "data.alpha": 0.3,
            "data.dataset": "digits",
            "data.partition": "dirichlet",
            "deletion.count": 64,
            "deletion.forget_classes": [3],
            "deletion.mode": "class",
            "deletion.round": 2,
            "methods.options": {
                "distill": {"epochs": 6, "lr": 0.02, "mu_hard": 0.5},
                "lau": {"alpha": 0.5, "temperature": 2},
            },
            "recovery.max_hops": 1,
            "seed": 3,
            "strategy": "lau",
            "train.local_epochs": 1,
            "train.rounds": 5,
        },
        {"epochs": 6, "lr": 0.02, "mu_hard": 0.5},
    ),
]

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

[unlearning]
epochs = 6
mu_hard = 0.5
"""


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key != "options":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _changed(config: SimulationConfig) -> dict[str, Any]:
    default = _flat(json.loads(SimulationConfig().model_dump_json()))
    return {
        key: value
        for key, value in _flat(json.loads(config.model_dump_json())).items()
        if default.get(key, object()) != value
    }


@pytest.mark.parametrize(
    ("args", "fields", "distill"),
    [case[1:] for case in COMMAND_LINES],
    ids=[case[0] for case in COMMAND_LINES],
)
def test_command_lines_resolve_to_the_configurations_they_always_did(
    tmp_path: Path, args: list[str], fields: dict[str, Any], distill: dict[str, Any]
) -> None:
    (tmp_path / "run.toml").write_text(RUN_TOML)
    args = [arg.replace("{run.toml}", str(tmp_path / "run.toml")) for arg in args]
    config = config_from_options(_simulate_params(args))
    assert _changed(config) == fields
    settings = configured_unlearner(config, "distill").settings.model_dump()
    default = DistillSettings().model_dump()
    assert {k: v for k, v in settings.items() if default[k] != v} == distill


def test_an_old_summary_with_an_unlearning_section_reruns_with_its_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = json.loads(SimulationConfig().to_json())
    config["data"]["dataset"] = "digits"
    config["unlearning"] = {**DistillSettings().model_dump(), "epochs": 7, "bound": None}
    (tmp_path / "summary.json").write_text(json.dumps({"strategy": "distill", "config": config}))
    main(["run-config", "--config", str(tmp_path / "summary.json"), "--mode", "requests"])
    printed = capsys.readouterr().out.strip()
    rerun = SimulationConfig.from_json(printed.removeprefix("fedforget-config='")[:-1])
    settings = configured_unlearner(rerun, "distill").settings
    assert (settings.epochs, settings.bound, settings.lr) == (7, None, 5e-3)
    assert "unlearning" not in json.loads(rerun.to_json())


def test_an_option_given_as_option_wins_over_its_alias() -> None:
    config = config_from_options(
        _simulate_params(["--unlearn-epochs", "3", "--option", "distill.epochs=4"])
    )
    assert configured_unlearner(config, "distill").settings.epochs == 4


def test_every_method_is_configured_the_same_way() -> None:
    config = validate_config({"methods": {"options": {"lau": {"epochs": 2}, "distill": {}}}})
    assert configured_unlearner(config, "lau").settings.epochs == 2
    assert configured_unlearner(config, "distill").settings == DistillSettings()
    with pytest.raises(ConfigError, match="distill option epochs: 0 is outside"):
        configured_unlearner(
            validate_config({"methods": {"options": {"distill": {"epochs": 0}}}}), "distill"
        )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"dataset": "digits", "rounds": 3},
            "dataset: unknown key; 'dataset' belongs in section 'data' (data.dataset)",
        ),
        ({"rounds": 3}, "'rounds' belongs in section 'train' (train.rounds)"),
        ({"train": {"seed": 1}}, "train.seed: unknown key; 'seed' belongs at the top level"),
        ({"lr": 0.1}, "'lr' belongs in a section: train.lr, recovery.lr, gan.lr"),
        ({"train": {"lr": 1e30}}, "train.lr: 1e+30 is outside (0, 10]"),
    ],
)
def test_a_config_error_names_where_the_key_belongs_and_the_range(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(values)
    assert message in str(info.value) and "\n" not in str(info.value)


PLUGIN = """
from fedforget.models import build_model, register_model


@register_model("my-cnn")
def my_cnn(num_classes: int, in_channels: int, image_size: int):
    return build_model("lenet5", num_classes, in_channels, image_size)
"""

PLUGIN_TOML = """
plugins = ["my_models_for_the_test"]
model = "my-cnn"
clients = 3

[data]
dataset = "digits"

[train]
rounds = 2

[deletion]
round = 1
"""


class _ReachedRayError(BaseException):
    """The simulation engine was started: every check before it passed."""


@pytest.fixture
def plugin_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the user's model module and a run.toml that names it."""
    from fedforget.models import MODEL_REGISTRY

    (tmp_path / "my_models_for_the_test.py").write_text(PLUGIN)
    (tmp_path / "run.toml").write_text(PLUGIN_TOML)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_models_for_the_test", raising=False)
    saved = dict(MODEL_REGISTRY)
    yield tmp_path
    sys.modules.pop("my_models_for_the_test", None)
    for name in [name for name in MODEL_REGISTRY if name not in saved]:
        del MODEL_REGISTRY[name]


def test_a_plugin_model_in_a_config_file_passes_the_name_check(
    plugin_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedforget.simulations import runner

    def reached_ray(*args: object, **kwargs: object) -> None:
        raise _ReachedRayError

    monkeypatch.setattr(runner, "run_simulation", reached_ray)
    with pytest.raises(_ReachedRayError):  # simulate checked everything, then started Ray
        main(["simulate", "--config", "run.toml", "--quiet", "--out", "run"])
    main(["run-config", "--config", "run.toml"])
    printed = capsys.readouterr().out
    assert '"model":"my-cnn"' in printed and '"plugins":["my_models_for_the_test"]' in printed


def test_the_python_api_loads_the_plugins_before_the_name_check(plugin_folder: Path) -> None:
    from fedforget.simulations.runner import check_names

    built = SimulationConfig(plugins=["my_models_for_the_test"], model="my-cnn")
    check_names(built)  # a configuration built in Python: the check imports its plugins
    config = validate_config({"plugins": ["my_models_for_the_test"], "model": "my-cnn"})
    check_names(config)
    assert config.model == built.model == "my-cnn"


def test_a_missing_plugin_module_is_one_line(plugin_folder: Path) -> None:
    with pytest.raises(ConfigError, match="plugin module 'no_such_module_here' cannot be"):
        validate_config({"plugins": ["no_such_module_here"]})


def test_a_python_api_run_trains_the_plugin_model_on_every_client(plugin_folder: Path) -> None:
    """Issue 36, item 2, end to end: the script names its module in ``plugins`` and the
    simulated clients, in other processes, build the same model (docs/models.md)."""
    from fedforget.simulations.runner import simulate

    config = validate_config(
        {
            "plugins": ["my_models_for_the_test"],
            "model": "my-cnn",
            "clients": 3,
            "data": {"dataset": "digits"},
            "train": {"rounds": 2, "batch_size": 16, "local_epochs": 2},
            "deletion": {"round": 1},
            "reference": "none",
            "out": str(plugin_folder / "run"),
        }
    )
    summary = simulate(config)
    assert summary.config["model"] == "my-cnn"
    assert summary.phases.final.test_accuracy > 0.2  # the clients trained it: above chance
