"""The options of the run commands, made from the configuration's fields.

``simulate``, ``compare``, ``sweep`` and ``run-config`` share one option set: one option
per field of :class:`~fedforget.config.SimulationConfig` (help text from the field's
description, the default from the field), named ``--FIELD`` (``--relay-FIELD``,
``--gan-FIELD``, ``--verify-FIELD`` in those sections), plus a small declared set where a
flag is not one field's value: ``--delete`` (a share or a count), ``--mode`` (``item``),
``--deleting-clients 5/6``, ``--deletion-round 4,7``, ``--option NAME.KEY=VALUE`` and the
aliases of distill's options (``--unlearn-epochs`` ...). An option left out sets nothing:
the ``--config`` file's value, or the field's default, stands.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import click
import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from fedforget.cli.files import parse_json, parse_toml, read_user_text
from fedforget.cli.parsing import (
    parse_client_groups,
    parse_delete,
    parse_options,
    parse_rounds,
)
from fedforget.config import ConfigError, SimulationConfig, merge_sections, validate_config
from fedforget.data.modes import mode_help

SECTION_PREFIX = {"recovery": "relay-", "gan": "gan-", "verify": "verify-"}
"""Flag prefix of a section's fields (the other sections' fields go by their own name)."""
FLAG_NAMES = {
    "message_timeout": "timeout",
    "plugins": "plugin",
    "data.path": "data-path",
    "data.seed": "data-seed",
    "deletion.forget_classes": "forget-class",
    "recovery.enabled": "relay",
    "recovery.min_accuracy": "min-accuracy",
    "recovery.max_hops": "max-hops",
    "gan.generator_clients": "gan-clients",
    "verify.method": "verify",
}
"""Fields whose flag is not PREFIX + FIELD (shorter, or what the command line always said)."""
PANELS = {
    "": "Run",
    "data": "Data",
    "deletion": "Deletion",
    "train": "Training",
    "recovery": "Recovery relay",
    "methods": "Methods",
    "verify": "Verification",
    "gan": "GAN",
    "resources": "Resources",
}
NONE_WORD = "none"


class _NoneGiven:
    """``--FIELD none`` on a field that may be None (a value apart from "not given")."""

    def __repr__(self) -> str:
        return NONE_WORD


NONE = _NoneGiven()


class Nullable(click.ParamType):
    """A value of ``base``, or the word ``none`` for a field whose None means something."""

    def __init__(self, base: click.ParamType) -> None:
        self.base = base
        self.name = f"{base.name}|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == NONE_WORD:
            return NONE
        return self.base.convert(value, param, ctx)


Setter = Callable[[dict[str, Any], Any, str], None]
"""``(values, given value, the run's strategy)``: puts an option's value into the sections."""


@dataclass(frozen=True)
class RunOption:
    """One option of the run commands: its flag, its type and what it sets."""

    flag: str
    name: str
    kind: type
    help: str
    panel: str
    put: Setter
    multiple: bool = False
    nullable: bool = False
    last: bool = False  # applied after the others (``--option`` wins over an alias)

    def parameter(self) -> inspect.Parameter:
        """The typer parameter (default None: not given)."""
        kind: Any = list[self.kind] if self.multiple else self.kind
        flags = f"{self.flag}/--no-{self.flag[2:]}" if self.kind is bool else self.flag
        extra: dict[str, Any] = {}
        if self.nullable:
            extra["click_type"] = Nullable(_CLICK_TYPES[self.kind])
        info = typer.Option(
            flags, help=self.help, rich_help_panel=self.panel, show_default=False, **extra
        )
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[kind | None, info],
        )


_CLICK_TYPES: dict[type, click.ParamType] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
}


def _put_at(path: tuple[str, ...]) -> Setter:
    def put(values: dict[str, Any], given: Any, strategy: str) -> None:
        value = None if given is NONE else given
        *sections, field = path
        target = values
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = list(value) if isinstance(value, list | tuple) else value

    return put


def _merge_into(values: dict[str, Any], update: dict[str, Any]) -> None:
    values.update(merge_sections(values, update))


# -- options made from fields ----------------------------------------------------------------

DECLARED_FIELDS = frozenset(
    {"deletion.mode", "deletion.deleting_clients", "deletion.round", "methods.options"}
)
"""Fields set by a declared option below (a parser of their compact form) instead."""


def field_options() -> Iterator[RunOption]:
    """One option per configuration field, in the sections' order."""
    for name, field in SimulationConfig.model_fields.items():
        section = _section_model(field)
        if section is None:
            yield _field_option((name,), field)
            continue
        for sub_name, sub_field in section.model_fields.items():
            if f"{name}.{sub_name}" not in DECLARED_FIELDS:
                yield _field_option((name, sub_name), sub_field)


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _field_option(path: tuple[str, ...], field: FieldInfo) -> RunOption:
    dotted = ".".join(path)
    prefix = SECTION_PREFIX.get(path[0], "") if len(path) > 1 else ""
    flag = "--" + FLAG_NAMES.get(dotted, prefix + path[-1].replace("_", "-"))
    kind, multiple, nullable = _kind(field.annotation, dotted)
    return RunOption(
        flag=flag,
        name=flag[2:].replace("-", "_"),
        kind=kind,
        help=_help(field, nullable and field.default is not None),
        panel=PANELS[path[0] if len(path) > 1 else ""],
        put=_put_at(path),
        multiple=multiple,
        nullable=nullable and kind is not Path,
    )


def _kind(annotation: Any, where: str) -> tuple[type, bool, bool]:
    """The command-line type of a field: (element type, repeatable, may be None)."""
    args = typing.get_args(annotation)
    nullable = False
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        members = [arg for arg in args if arg is not type(None)]
        nullable = len(members) < len(args)
        if len(members) != 1:
            raise TypeError(f"{where}: declare an option for a field of type {annotation}")
        annotation, args = members[0], typing.get_args(members[0])
    if typing.get_origin(annotation) is list:
        kind, _, _ = _kind(args[0], where)
        return kind, True, nullable
    if typing.get_origin(annotation) is Annotated:
        return _kind(args[0], where)
    if typing.get_origin(annotation) is Literal:
        return str, False, nullable
    if annotation in (int, float, str, bool, Path):
        return annotation, False, nullable
    raise TypeError(f"{where}: declare an option for a field of type {annotation}")


def _help(field: FieldInfo, none_allowed: bool) -> str:
    text = (field.description or "").strip()
    default = field.default
    if default is not PydanticUndefined and default is not None and "default" not in text:
        shown = default if not isinstance(default, bool) else str(default).lower()
        text = f"{text} (default {shown})".strip()
    if none_allowed:
        text += " ('none' turns it off)"
    return text


# -- declared options: compact forms and aliases ---------------------------------------------


def _delete(values: dict[str, Any], given: str, strategy: str) -> None:
    delete = parse_delete(given)
    if "share" in delete:
        delete["count"] = None  # a share given here replaces a count from the file
    _merge_into(values, {"deletion": delete})


def _method_options(values: dict[str, Any], given: list[str], strategy: str) -> None:
    _merge_into(values, {"methods": {"options": parse_options(given, strategy)}})


def _alias(method: str, key: str, zero_is_none: bool = False) -> Setter:
    """An option that is ``--option METHOD.KEY=VALUE`` under a name of its own."""

    def put(values: dict[str, Any], given: Any, strategy: str) -> None:
        value = None if zero_is_none and given == 0 else given
        _merge_into(values, {"methods": {"options": {method: {key: value}}}})

    return put


def _compact(path: tuple[str, ...], parse: Callable[[Any], Any]) -> Setter:
    def put(values: dict[str, Any], given: Any, strategy: str) -> None:
        _put_at(path)(values, parse(given), strategy)

    return put


DISTILL = "Distill (alias of --option distill.KEY=VALUE)"
DECLARED_OPTIONS = (
    RunOption(
        "--delete",
        "delete",
        str,
        "Share of all training samples to delete (6%), or a count (64) (default 6%).",
        PANELS["deletion"],
        _delete,
    ),
    RunOption(
        "--mode",
        "mode",
        str,
        "The deletion mode: " + mode_help() + " (default backdoor; gan task: item).",
        PANELS["deletion"],
        _compact(("deletion", "mode"), str),
    ),
    RunOption(
        "--deleting-clients",
        "deleting_clients",
        str,
        "Comma-separated partition ids holding D_f; '/' separates the clients of sequential "
        "deletion steps (5/6: client 5 at the first round, 6 at the second).",
        PANELS["deletion"],
        _compact(("deletion", "deleting_clients"), parse_client_groups),
    ),
    RunOption(
        "--deletion-round",
        "deletion_round",
        str,
        "Deletion requests arrive after this round (default 7; requests: 1); comma-separated "
        "rounds (4,7) make sequential deletion steps (simulate).",
        PANELS["deletion"],
        _compact(("deletion", "round"), parse_rounds),
    ),
    RunOption(
        "--option",
        "option",
        str,
        "A method's option, NAME.KEY=VALUE (e.g. lau.alpha=0.5); repeatable.",
        PANELS["methods"],
        _method_options,
        multiple=True,
        last=True,
    ),
    RunOption("--unlearn-epochs", "unlearn_epochs", int, "Distillation epochs.", DISTILL,
              _alias("distill", "epochs")),
    RunOption("--unlearn-lr", "unlearn_lr", float, "Distillation learning rate.", DISTILL,
              _alias("distill", "lr")),
    RunOption("--mu-distill", "mu_distill", float, "Weight of L_D (0 = off).", DISTILL,
              _alias("distill", "mu_distill")),
    RunOption("--mu-attention", "mu_attention", float, "Weight of L_AMA (0 = off).", DISTILL,
              _alias("distill", "mu_attention")),
    RunOption("--mu-hard", "mu_hard", float, "Weight of L_H.", DISTILL,
              _alias("distill", "mu_hard")),
    RunOption("--bound", "bound", float, "BND of the hard loss (0 = unbounded).", DISTILL,
              _alias("distill", "bound", zero_is_none=True)),
    RunOption("--reg-weight", "reg_weight", float, "Weight of ||w - w_o||^2.", DISTILL,
              _alias("distill", "reg_weight")),
    RunOption("--prune-mads", "prune_mads", float, "Outlier pruning before distilling (0 = off).",
              DISTILL, _alias("distill", "prune_mads", zero_is_none=True)),
)  # fmt: skip


def run_options() -> list[RunOption]:
    """Every option of the run commands; refuses a flag taken twice (a naming mistake)."""
    options = [*field_options(), *DECLARED_OPTIONS]
    seen: dict[str, str] = {}
    for option in options:
        for flag in (option.flag, option.name):
            if flag in seen:
                raise TypeError(f"option {flag} is taken twice")
            seen[flag] = option.flag
    return options


RUN_OPTIONS = run_options()


# -- options that are no configuration value -------------------------------------------------

CONFIG_FILE = inspect.Parameter(
    "config_file",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML file (or a summary.json) holding the SimulationConfig, sections as in "
            "summary.json's config; options given here override its values.",
            rich_help_panel=PANELS[""],
        ),
    ],
)
QUIET = inspect.Parameter(
    "quiet",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[bool, typer.Option(help="No live display.", rich_help_panel="Output")],
)
OVERWRITE = inspect.Parameter(
    "overwrite",
    inspect.Parameter.KEYWORD_ONLY,
    default=False,
    annotation=Annotated[
        bool,
        typer.Option(
            help="Replace an earlier run in --out (refused otherwise).", rich_help_panel="Output"
        ),
    ],
)


def with_run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` (which takes ``**options``) every run option as a typer parameter.

    Its own parameters come first; the generated ones reach it in ``options``.
    """
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    added = [CONFIG_FILE, *(option.parameter() for option in RUN_OPTIONS), QUIET, OVERWRITE]
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*(p.replace(kind=p.KEYWORD_ONLY) for p in own), *added]
    )
    command.__annotations__ = {
        **command.__annotations__,
        **{p.name: p.annotation for p in added},
    }
    return command


# -- from options to a configuration ---------------------------------------------------------


def config_from_options(params: dict[str, Any]) -> SimulationConfig:
    """The validated configuration from the options of a run command.

    The ``--config`` file is read and validated on its own first (a wrong value in it is an
    error even where an option replaces it); an option that was not given sets nothing.
    """
    file_values = read_config_file(params.get("config_file"))
    task = params.get("task") or file_values.get("task") or "classify"
    strategy = (
        params.get("strategy")
        or file_values.get("strategy")
        or ("cascaded" if task == "gan" else "distill")
    )
    values = merge_sections(file_values, option_values(params, strategy))
    values["strategy"] = strategy
    deletion = values.setdefault("deletion", {})
    deletion.setdefault("mode", "random" if task == "gan" else "backdoor")
    if "clients" not in values:
        inferred = _client_files(values.get("data", {}))
        if inferred:
            values["clients"] = inferred
    return validate_config(values)


def option_values(params: dict[str, Any], strategy: str) -> dict[str, Any]:
    """The configuration sections the given options set (``None``: not given, sets nothing)."""
    values: dict[str, Any] = {}
    for option in sorted(RUN_OPTIONS, key=lambda option: option.last):
        given = params.get(option.name)
        if given is None or (option.multiple and not given):
            continue
        option.put(values, list(given) if option.multiple else given, strategy)
    return values


def read_config_file(path: Path | str | None) -> dict[str, Any]:
    """The configuration values in a TOML file, or in a JSON file (a run's summary.json).

    Sections are those of :class:`SimulationConfig` (``[data]``, ``[deletion]``, ``[train]``,
    ...), as in summary.json's ``config``; a summary.json is read through its ``config``.
    The file is validated on its own (every field; checks across fields wait for the merged
    configuration).
    """
    if path is None:
        return {}
    path = Path(path)
    option = "--config"
    text = read_user_text(path, option)
    if path.suffix.lower() == ".json":
        raw = parse_json(text, path, option)
        raw = raw["config"] if isinstance(raw, dict) and "config" in raw else raw
    else:
        raw = parse_toml(text, path, option)
    if not isinstance(raw, dict):
        raise ConfigError(f"{option} {path}: expected a table of configuration sections")
    try:
        validate_config(raw, partial=True)
    except ConfigError as err:
        raise ConfigError(f"{option} {path}: {err}") from None
    return raw


def _client_files(data: Any) -> int:
    """How many client_*.npz files the configured custom-data folder holds (0: not a folder)."""
    if not isinstance(data, dict):
        return 0
    path = data.get("path")
    if data.get("dataset") != "npz" or path is None or not Path(path).expanduser().is_dir():
        return 0
    from fedforget.data.sources.npz import client_files

    return len(client_files(Path(path).expanduser()))
