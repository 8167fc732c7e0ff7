"""Your own model (docs/models.md): a plain ``nn.Module`` serves every method that needs only
``model(x) -> logits``; a method that needs ClassifierModel parts refuses it in one line.

The path is the in-process one of ``simulate``: FedAvg on digits (fedforget.federated), the
deletion of class 3 by ``distill``, every metric of the run summary.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedforget.cli import main
from fedforget.config import ConfigError
from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.metrics import Evaluator, attention_discrepancy
from fedforget.models import build_model, model_names, register_model
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner

PLAIN = "test-plain-mlp"
DIGITS = ["--dataset", "digits", "--clients", "3", "--rounds", "2", "--deletion-round", "1"]


def plain_mlp(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """An own model as a Flower user writes it: no head, no feature layers."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size**2, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


if PLAIN not in model_names():
    register_model(PLAIN)(plain_mlp)


def test_a_plain_module_learns_forgets_with_distill_and_is_measured(make_config) -> None:
    torch.manual_seed(0)
    config = make_config(
        model=PLAIN,
        clients=3,
        deletion={"mode": "class", "forget_classes": [3]},
        train={"batch_size": 16},
    )
    federation = build_federation(config)

    def build() -> nn.Module:
        return build_model(PLAIN, federation.num_classes, 1, federation.image_size)

    initial = state_to_numpy(build())
    trained = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=False
    ).run(initial, 6, [])
    evaluator = Evaluator(federation)
    before = evaluator.evaluate(load_numpy_state(build(), trained))
    assert before.forget_test_accuracy > 0.8 and before.retain_test_accuracy > 0.8

    request = UnlearningRequest(
        forget=federation.forget_set(),
        num_classes=federation.num_classes,
        mode="class",
        forget_classes=(3,),
    )
    context = UnlearningContext(initial_state=initial, build_model=build)
    unlearner = build_unlearner("distill", batch_size=16)
    model = load_numpy_state(build(), trained)
    unlearner.check_model(model)  # distill needs nothing beyond model(x)
    after = evaluator.evaluate(unlearner.unlearn(model, request, context))

    assert after.forget_test_accuracy < 0.5 * before.forget_test_accuracy
    assert after.retain_test_accuracy > before.retain_test_accuracy - 0.25
    no_maps = attention_discrepancy(model, model, federation.test.x[:10], torch.device("cpu"))
    assert math.isnan(no_maps)  # a plain module names no feature maps: the metric is absent


@pytest.mark.parametrize(("name", "missing"), [("lau", "embed, head"), ("nad", "forward_features")])
def test_a_method_that_needs_classifier_parts_names_them(name: str, missing: str) -> None:
    with pytest.raises(ConfigError) as refusal:
        build_unlearner(name).check_model(plain_mlp(10, 1, 8))
    message = str(refusal.value)
    assert message.startswith(f"{name} needs a model with {missing} ") and "\n" not in message
    build_unlearner(name).check_model(build_model("lenet5", 10, 1, 8))  # the contract: fine


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["simulate", *DIGITS, "--strategy", "lau"], "lau needs a model with embed, head"),
        (["compare", *DIGITS, "--strategies", "distill,nad"], "nad needs a model with"),
    ],
)
def test_the_command_line_refuses_before_training(capsys, tmp_path, args, fragment) -> None:
    with pytest.raises(SystemExit) as info:
        main([*args, "--model", PLAIN, "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "run").exists()


def test_the_classifier_head_of_a_plain_module_is_its_last_linear_layer() -> None:
    from fedforget.models import classifier_head

    model = plain_mlp(10, 1, 8)
    assert classifier_head(model) is model[3]
    lenet = build_model("lenet5", 10, 1, 8)
    assert classifier_head(lenet) is lenet.head
