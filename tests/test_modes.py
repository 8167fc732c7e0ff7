"""Conformance: every registered deletion mode plans, prepares and scores a deletion.

Each mode runs through a short in-process deletion on digits (4 clients), with its own
example settings (:attr:`DeletionMode.example`): the plan names D_f on the deleting clients
only, the evaluation splits are consistent, a model trained with D_f is scored, the
``none`` method leaves it as it is while retraining without D_f changes it, and each
method's refusal follows the mode's kind. Node-side modes have no plan: the requests the
nodes file decide the mode of each step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.config import ConfigError, validate_config
from fedforget.data import build_federation
from fedforget.data.modes import DELETION_MODES, Kind, deletion_mode, mode_names
from fedforget.federated import LocalFederation
from fedforget.metrics import Evaluator
from fedforget.models import build_model
from fedforget.testing import digits_config
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning import (
    UNLEARNER_REGISTRY,
    UnlearningContext,
    UnlearningRequest,
    build_unlearner,
)

PLANNED = [name for name in mode_names() if not DELETION_MODES[name].node_side]
NODE_SIDE = [name for name in mode_names() if DELETION_MODES[name].node_side]


def _config(name: str):
    deletion = {"mode": name, "round": 2, **DELETION_MODES[name].example}
    return digits_config(deletion=deletion, train={"batch_size": 16})


@pytest.fixture(scope="module")
def deletions():
    """Per planned mode: config, federation, w_0, the model trained with D_f, a builder."""
    cache = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            config = _config(name)
            federation = build_federation(config)

            def build():
                return build_model("lenet5", federation.num_classes, 1, federation.image_size)

            initial = state_to_numpy(build())
            full = LocalFederation.from_federation(
                federation, build, config.train, drop_deleted=False
            )
            cache[name] = config, federation, initial, full.run(initial, 2), build
        return cache[name]

    return get


@pytest.mark.parametrize("name", PLANNED)
def test_a_mode_plans_d_f_on_its_deleting_clients_only(deletions, name: str) -> None:
    config, federation, *_ = deletions(name)
    mode = deletion_mode(name)
    plan = federation.plan
    assert plan.mode == name and plan.deletion_mode is mode and config.deletion_mode is mode
    assert len(plan.forget_indices) > 0
    deleting = set(config.deleting_client_ids())
    assert set(plan.deleting_clients) <= deleting
    for cid, indices in plan.forget_by_client.items():
        held = federation.client_indices[cid]
        assert np.isin(indices, held).all()  # a client deletes only what it holds
        if mode.clients_leave:
            assert np.array_equal(np.sort(indices), np.sort(held))  # and leaves with all of it
    assert federation.is_deleted(plan.forget_indices).all()
    assert not federation.is_deleted(federation.retain_indices()).any()
    if mode.names_classes:
        assert np.isin(federation.forget_set().y, plan.forget_classes).all()


@pytest.mark.parametrize("name", PLANNED)
def test_a_modes_splits_are_consistent_and_scored(deletions, name: str) -> None:
    _, federation, _, trained, build = deletions(name)
    mode = deletion_mode(name)
    forget_test, retain_test = federation.class_test_split()
    assert len(retain_test) > 0
    if forget_test is not None:
        assert len(forget_test) > 0 and forget_test.x.shape[1:] == federation.test.x.shape[1:]
    if mode.names_classes:
        assert forget_test is not None and np.isin(forget_test.y, plan_classes(federation)).all()
    metrics = Evaluator(federation).evaluate(load_numpy_state(build(), trained))
    assert metrics.forget_accuracy is not None and 0.0 <= metrics.forget_accuracy <= 1.0
    assert (metrics.forget_test_accuracy is None) == (forget_test is None)
    assert (metrics.backdoor_success is None) == (federation.plan.backdoor_target is None)


def plan_classes(federation) -> list[int]:
    return list(federation.plan.forget_classes)


@pytest.mark.parametrize("name", PLANNED)
def test_a_short_deletion_none_keeps_the_model_retrain_changes_it(deletions, name: str) -> None:
    config, federation, initial, trained, build = deletions(name)
    request = UnlearningRequest(
        forget=federation.forget_set(),
        num_classes=federation.num_classes,
        mode=name,
        forget_classes=tuple(federation.plan.forget_classes),
        leaving_clients=tuple(federation.plan.deleting_clients)
        if deletion_mode(name).clients_leave
        else (),
    )
    assert request.kind is deletion_mode(name).kind
    context = UnlearningContext(initial_state=initial, build_model=build)
    kept = build_unlearner("none").unlearn(load_numpy_state(build(), trained), request, context)
    assert all(np.array_equal(v, trained[k]) for k, v in state_to_numpy(kept).items())
    without = LocalFederation.from_federation(federation, build, config.train, drop_deleted=True)
    retrained = without.run(initial, 2)
    assert any(not np.array_equal(v, trained[k]) for k, v in retrained.items())


@pytest.mark.parametrize("name", mode_names())
def test_every_method_accepts_or_refuses_a_mode_by_its_kind(name: str) -> None:
    mode = deletion_mode(name)
    for method_name, method in UNLEARNER_REGISTRY.items():
        refusal = method.refusal(name)
        assert (refusal is None) == (mode.kind in method.modes), method_name
        if refusal is not None:
            assert f"'{name}'" in refusal and "\n" not in refusal


@pytest.mark.parametrize("name", NODE_SIDE)
def test_a_node_side_mode_plans_nothing_and_resolves_what_was_filed(name: str) -> None:
    config = digits_config(deletion={"mode": name})
    assert build_federation(config).plan.forget_by_client == {}
    mode = deletion_mode(name)
    assert mode.resolve(named_classes=True).kind is Kind.CLASS
    assert mode.resolve(named_classes=False).kind is Kind.RANDOM
    unset = validate_config({"deletion": {"mode": name}, "data": {"dataset": "digits"}})
    assert unset.deletion.round == (mode.default_round or unset.deletion.round)


def test_a_mode_is_looked_up_by_name_or_alias_and_an_unknown_one_is_one_line() -> None:
    for name in mode_names():
        mode = deletion_mode(name)
        assert mode == name and all(deletion_mode(alias) is mode for alias in mode.aliases)
    assert digits_config(deletion={"mode": "item", "share": 0.06}).deletion.mode == "random"
    with pytest.raises(ConfigError, match=r"unknown deletion mode 'nope'.*backdoor") as err:
        digits_config(deletion={"mode": "nope"})
    assert "\n" not in str(err.value)


def test_the_style_mode_s_test_set_carries_the_style_and_d_f_is_styled(deletions) -> None:
    _, federation, *_ = deletions("style")
    forget_test, retain_test = federation.class_test_split()
    assert np.allclose(forget_test.x, 1.0 - federation.test.x)
    assert retain_test is federation.test
    leaving = federation.plan.deleting_clients[0]
    original = build_federation(_config("client"))  # the same clients, not styled
    styled, _ = federation.client_data(leaving, drop_deleted=False)
    plain, _ = original.client_data(leaving, drop_deleted=False)
    assert np.allclose(styled.x, 1.0 - plain.x) and np.array_equal(styled.y, plain.y)


def test_the_mislabeled_mode_gives_d_f_wrong_labels_only(deletions) -> None:
    _, federation, *_ = deletions("mislabeled")
    clean = build_federation(_config("random"))  # the same draw of samples, true labels
    forget = federation.plan.forget_indices
    assert np.array_equal(forget, clean.plan.forget_indices)
    assert (federation.train.y[forget] != clean.train.y[forget]).all()
    kept = federation.retain_indices()
    assert np.array_equal(federation.train.y[kept], clean.train.y[kept])
