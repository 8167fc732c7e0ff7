"""The generic registry behind every extension point (unlearners, verifiers, models, ...)."""

from __future__ import annotations

import pytest

from fedforget.config import ConfigError
from fedforget.data import SOURCE_REGISTRY, UnknownDatasetError
from fedforget.gan import GAN_UNLEARNER_REGISTRY, UnknownGanUnlearnerError
from fedforget.models import MODEL_REGISTRY, UnknownModelError
from fedforget.registry import Registry, UnknownNameError, load_plugins
from fedforget.unlearning import UNLEARNER_REGISTRY, UnknownUnlearnerError
from fedforget.verification import VERIFIER_REGISTRY


class _Entry:
    name = "alpha"


class _Other:
    name = "alpha"


def test_register_lookup_and_names() -> None:
    registry: Registry[type] = Registry("widget")
    assert registry.register(_Entry) is _Entry
    assert registry.lookup("alpha") is _Entry
    assert registry.add("beta", _Other) is _Other
    assert registry.names() == ["alpha", "beta"]
    assert "alpha" in registry and "gamma" not in registry and len(registry) == 2


def test_unknown_name_is_one_line_config_error_listing_names() -> None:
    registry: Registry[type] = Registry("widget")
    registry.register(_Entry)
    with pytest.raises(UnknownNameError) as excinfo:
        registry.lookup("gamma")
    message = str(excinfo.value)
    assert message == "unknown widget 'gamma'; choose one of: alpha"
    assert isinstance(excinfo.value, ConfigError) and isinstance(excinfo.value, KeyError)


def test_a_taken_name_needs_replace_but_the_same_entry_may_register_again() -> None:
    registry: Registry[type] = Registry("widget")
    registry.register(_Entry)
    registry.register(_Entry)  # a module imported twice
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_Other)
    assert registry.lookup("alpha") is _Entry
    registry.add("alpha", _Other, replace=True)
    assert registry.lookup("alpha") is _Other


def test_normalize_makes_names_case_insensitive() -> None:
    registry: Registry[type] = Registry("dataset", normalize=lambda n: n.strip().lower())
    registry.add(" Scans ", _Entry)
    assert registry.lookup("SCANS") is _Entry and registry.names() == ["scans"]


@pytest.mark.parametrize(
    ("registry", "error"),
    [
        (UNLEARNER_REGISTRY, UnknownUnlearnerError),
        (GAN_UNLEARNER_REGISTRY, UnknownGanUnlearnerError),
        (VERIFIER_REGISTRY, UnknownNameError),
        (MODEL_REGISTRY, UnknownModelError),
        (SOURCE_REGISTRY, UnknownDatasetError),
    ],
)
def test_every_extension_point_uses_the_registry(registry: Registry, error: type) -> None:
    assert isinstance(registry, Registry) and registry.names()
    with pytest.raises(error, match="choose one of: ") as excinfo:
        registry.lookup("no-such-name")
    assert isinstance(excinfo.value, ConfigError) and "\n" not in str(excinfo.value)


def test_load_plugins_imports_modules_and_reports_a_missing_one() -> None:
    load_plugins(["fedforget.models"])
    with pytest.raises(ConfigError, match="plugin module 'no_such_plugin_mod' cannot be imported"):
        load_plugins(["no_such_plugin_mod"])
