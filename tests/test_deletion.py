"""Deletion plans, triggers and configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from fedforget.config import ConfigError, validate_config
from fedforget.data import apply_trigger, build_federation


def test_trigger_stamps_a_white_square_near_the_bottom_right_only():
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    triggered = apply_trigger(x, size=4)
    assert x.sum() == 0  # input untouched
    assert np.all(triggered[:, :, 23:27, 23:27] == 1.0)
    assert triggered.sum() == 2 * 16


def test_backdoor_plan_deletes_the_share_from_non_target_samples_and_relabels(make_config):
    config = make_config()
    federation = build_federation(config)
    forget = federation.plan.forget_indices
    assert len(forget) == round(0.06 * len(federation.train))
    assert np.all(federation.train.y[forget] == config.deletion.backdoor_target)
    assert federation.backdoor_test_set() is not None
    # every deleted sample carries the trigger
    size = config.deletion.trigger_size
    corner = federation.train.x[forget][:, :, -1 - size : -1, -1 - size : -1]
    assert np.all(corner == 1.0)
    # D_f^i lies inside client i's partition
    for cid, idx in federation.plan.forget_by_client.items():
        assert np.isin(idx, federation.client_indices[cid]).all()


def test_random_plan_keeps_labels_and_respects_the_deleting_clients(make_config):
    config = make_config(deletion={"mode": "random", "deleting_clients": [1, 2]})
    federation = build_federation(config)
    assert federation.plan.deleting_clients == [1, 2]
    assert federation.plan.backdoor_target is None
    assert federation.backdoor_test_set() is None


def test_class_plan_takes_every_sample_of_the_class(make_config):
    federation = build_federation(make_config(deletion={"mode": "class", "forget_classes": [3]}))
    forget = federation.plan.forget_indices
    assert np.all(federation.train.y[forget] == 3)
    assert np.sum(federation.train.y == 3) == len(forget)
    forgotten_test, kept_test = federation.class_test_split()
    assert np.all(forgotten_test.y == 3) and not np.any(kept_test.y == 3)


def test_client_plan_takes_whole_clients(make_config):
    federation = build_federation(make_config(deletion={"mode": "client"}))
    assert federation.plan.deleting_clients == [0]
    assert np.array_equal(federation.plan.forget_indices, federation.client_indices[0])


def test_client_data_drops_deleted_samples_after_deletion(make_config):
    federation = build_federation(make_config())
    cid = federation.plan.deleting_clients[0]
    full, full_idx = federation.client_data(cid, drop_deleted=False)
    kept, kept_idx = federation.client_data(cid, drop_deleted=True)
    assert len(full) - len(kept) == len(federation.client_forget_indices(cid))
    assert not federation.is_deleted(kept_idx).any()
    assert federation.is_deleted(full_idx).any()


def test_plan_is_seeded(make_config):
    a = build_federation(make_config(seed=1)).plan.forget_indices
    b = build_federation(make_config(seed=1)).plan.forget_indices
    c = build_federation(make_config(seed=2)).plan.forget_indices
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"deletion": {"share": 0.0}}, "strictly between"),
        ({"deletion": {"share": 1.0}}, "strictly between"),
        ({"clients": 1}, "at least 2 clients"),
        ({"deletion": {"round": 4}}, "beyond the last round"),
        ({"deletion": {"mode": "erase"}}, "deletion.mode"),
        ({"deletion": {"mode": "class"}}, "--forget-class"),
        ({"deletion": {"deleting_clients": [7]}}, "partition ids"),
    ],
)
def test_invalid_configurations_raise_one_line_config_errors(make_config, overrides, fragment):
    with pytest.raises(ConfigError) as info:
        make_config(**overrides)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"deletion": {"mode": "class", "forget_classes": [10]}}, "out of range"),
        ({"deletion": {"share": 0.5, "deleting_clients": [0]}}, "needs more than"),
        ({"deletion": {"mode": "client", "deleting_clients": [0, 1, 2, 3]}}, "stays"),
    ],
)
def test_impossible_deletions_raise_config_errors(make_config, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_federation(make_config(**overrides))


def test_config_round_trips_through_json(make_config):
    config = make_config(deletion={"mode": "class", "forget_classes": [1, 2]})
    assert validate_config(__import__("json").loads(config.to_json())) == config
