"""Conformance: every registered verifier honours the Verifier contract on digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedforget.config import ConfigError, validate_config
from fedforget.data import build_federation
from fedforget.models import build_model
from fedforget.training import train_local
from fedforget.verification import (
    VERIFIER_REGISTRY,
    VerificationTask,
    build_verifier,
    client_task,
    verifier_names,
)

SMALL_OPTIONS = {
    "skyeye": {"steps": 20, "batch_size": 32, "width": 8, "samples_per_class": 4},
    "spd": {"epochs": 1, "max_samples": 48},
}
FORGET_CLASS = 3


@pytest.fixture(scope="module")
def class_task() -> VerificationTask:
    """Client 0 of a digits federation after deleting class 3, with two trained models."""
    config = validate_config(
        {
            "clients": 2,
            "data": {"dataset": "digits"},
            "deletion": {"mode": "class", "forget_classes": [FORGET_CLASS]},
        }
    )
    federation = build_federation(config)
    models = []
    for seed, drop in ((0, False), (1, True)):
        data, _ = federation.client_data(0, drop_deleted=drop)
        torch.manual_seed(seed)
        model = build_model("lenet5", 10, 1, 8)
        train_local(model, data, epochs=3, lr=0.05, batch_size=32, seed=seed, momentum=0.9)
        models.append(model.eval())
    original, unlearned = models
    return client_task(federation, config, 0, unlearned, original, "original")


def test_every_verifier_has_small_options() -> None:
    assert set(verifier_names()) == set(SMALL_OPTIONS)


@pytest.mark.parametrize("name", sorted(VERIFIER_REGISTRY))
def test_verifier_contract(name: str, class_task: VerificationTask, tmp_path) -> None:
    verifier = build_verifier(name, seed=0, device="cpu", **SMALL_OPTIONS[name])
    weights = [p.detach().clone() for p in class_task.model.parameters()]
    calls: list[str] = []
    result = verifier.verify(class_task, lambda phase, step, total, m: calls.append(phase))
    report = result.to_json()
    assert report["seconds"] > 0 and calls, "a verification reports progress and its time"
    json.dumps(report)  # plain JSON
    paths = result.write(tmp_path)
    assert (tmp_path / f"{name}.json").is_file()
    assert json.loads((tmp_path / f"{name}.json").read_text()) == json.loads(json.dumps(report))
    assert any(p.suffix == ".png" and p.read_bytes()[:4] == b"\x89PNG" for p in paths.values())
    # the verified model is left as it was
    assert all(
        torch.equal(a, b) for a, b in zip(weights, class_task.model.parameters(), strict=True)
    )
    again = build_verifier(name, seed=0, device="cpu", **SMALL_OPTIONS[name]).verify(class_task)
    strip = {"seconds"}
    assert {k: v for k, v in again.to_json().items() if k not in strip} == {
        k: v for k, v in report.items() if k not in strip
    }, "seeded: the same task and options give the same report"


@pytest.mark.parametrize("name", sorted(VERIFIER_REGISTRY))
def test_verifier_rejects_a_task_it_cannot_check(name: str, class_task) -> None:
    empty = class_task.local_data.subset(np.array([], dtype=np.int64))
    hopeless = VerificationTask(
        model=class_task.model,
        reference=class_task.reference,
        reference_name="original",
        num_classes=10,
        local_data=empty,
        forget=empty,
    )
    with pytest.raises(ValueError) as info:
        build_verifier(name).check(hopeless)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(VERIFIER_REGISTRY))
def test_unknown_options_are_one_line_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} option no_such_option"):
        build_verifier(name, no_such_option=1)


def test_unknown_verifier() -> None:
    with pytest.raises(ConfigError, match="choose one of: skyeye, spd"):
        build_verifier("eyeball")


def test_client_task_matches_the_deletion(class_task: VerificationTask) -> None:
    assert class_task.forgotten_classes == (FORGET_CLASS,)
    assert FORGET_CLASS not in class_task.local_data.y  # the deleted class left the local data
    assert set(class_task.forget.y) == {FORGET_CLASS} and len(class_task.forget) > 0
    assert class_task.backdoor_target is None


def test_client_task_for_a_backdoor_keeps_the_triggered_samples() -> None:
    config = validate_config({"clients": 2, "data": {"dataset": "digits"}})
    federation = build_federation(config)
    model = build_model("lenet5", 10, 1, 8)
    task = client_task(federation, config, 1, model, model, "x")
    assert (task.backdoor_target, task.trigger_size) == (0, config.deletion.trigger_size)
    assert task.forgotten_classes == () and len(task.forget) > 0
    local, _ = federation.client_data(1, drop_deleted=False)
    assert len(task.local_data) == len(local)  # the triggered samples stay in the local data
