"""Conformance: every registered unlearner forgets D_f without destroying the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.data import build_federation
from fedforget.models import build_model
from fedforget.training import accuracy, state_to_numpy, train_local
from fedforget.unlearning import (
    UnknownUnlearnerError,
    UnlearningContext,
    UnlearningRequest,
    build_unlearner,
    unlearner_names,
)

FORGOTTEN_CLASS = 3
# digits' D_f is ~145 samples: a smaller batch gives the defaults' epochs enough steps.
SMALL_DATA_OPTIONS: dict[str, dict] = {"distill": {"batch_size": 16}}


@pytest.fixture(scope="module")
def trained(make_config):
    """LeNet-5 trained centrally on digits, with class 3 to be forgotten."""
    config = make_config(deletion={"mode": "class", "forget_classes": [FORGOTTEN_CLASS]})
    federation = build_federation(config)
    torch.manual_seed(0)
    model = build_model("lenet5", federation.num_classes, 1, federation.image_size)
    initial = state_to_numpy(model)
    train_local(model, federation.train, epochs=15, lr=0.05, momentum=0.9, batch_size=32, seed=0)
    return federation, model, initial


@pytest.mark.parametrize("name", unlearner_names())
def test_unlearner_forgets_the_class_and_keeps_the_rest(trained, name):
    federation, model, initial = trained
    forgotten_test, kept_test = federation.class_test_split()
    before_forgotten = accuracy(model, forgotten_test)
    before_kept = accuracy(model, kept_test)
    assert before_forgotten > 0.8 and before_kept > 0.8  # the setup really learned

    retain = federation.train.subset(federation.retain_indices())
    request = UnlearningRequest(
        forget=federation.forget_set(),
        num_classes=federation.num_classes,
        mode="class",
        forget_classes=(FORGOTTEN_CLASS,),
        retain=retain,
    )
    context = UnlearningContext(
        initial_state=initial,
        build_model=lambda: build_model("lenet5", federation.num_classes, 1, 8),
    )
    student = build_model("lenet5", federation.num_classes, 1, 8)
    student.load_state_dict(model.state_dict())
    unlearned = build_unlearner(name, **SMALL_DATA_OPTIONS.get(name, {})).unlearn(
        student, request, context
    )

    assert accuracy(unlearned, forgotten_test) < 0.2 * before_forgotten
    assert accuracy(unlearned, kept_test) > before_kept - 0.35
    # the teacher's weights were not modified
    assert all(np.array_equal(v, initial[k]) for k, v in initial.items())


def test_unknown_unlearner_lists_the_choices():
    with pytest.raises(UnknownUnlearnerError, match=r"choose one of: .*distill"):
        build_unlearner("nope")
