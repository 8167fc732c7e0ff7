"""distill's pruning: the shortcut past the conv stack prunes what full passes prune."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.models import build_model, classifier_head
from fedforget.training import load_numpy_state, state_to_numpy, to_tensors
from fedforget.unlearning import distillation
from fedforget.unlearning.distillation import _attribution_pass, prune_forget_units


def _full_passes(model, layer, x, captured, logits):
    return lambda: (model(x), captured["a"])


def _backdoored(make_config):
    torch.set_num_threads(1)
    config = make_config(seed=0, deletion={"mode": "backdoor", "share": 0.1})
    federation = build_federation(config)

    def build():
        return build_model("lenet5", federation.num_classes, 1, federation.image_size)

    torch.manual_seed(0)
    initial = state_to_numpy(build())
    local = LocalFederation.from_federation(federation, build, config.train, drop_deleted=False)
    x, y = to_tensors(federation.forget_set(), torch.device("cpu"))
    return build, local.run(initial, 4), x, y


def test_the_shortcut_prunes_the_units_and_weights_full_passes_prune(make_config, monkeypatch):
    build, state, x, y = _backdoored(make_config)
    fast, slow = load_numpy_state(build(), state), load_numpy_state(build(), state)
    units = prune_forget_units(fast, x, y, mads=3.0, max_units=16)
    monkeypatch.setattr(distillation, "_attribution_pass", _full_passes)
    assert prune_forget_units(slow, x, y, mads=3.0, max_units=16) == units
    assert units  # the backdoor leaves outlying units: the comparison is not vacuous
    for name, value in fast.state_dict().items():
        assert torch.equal(value, slow.state_dict()[name]), name


class SkipAroundTheLayer(nn.Module):
    """Logits that read the image past the pruned layer: the shortcut cannot reproduce them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)
        self.skip = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, 1)
        return self.head(torch.relu(self.fc1(flat))) + self.skip(flat)


def test_a_model_that_reads_the_image_past_the_layer_gets_full_passes():
    torch.manual_seed(0)
    model = SkipAroundTheLayer().eval()
    x = torch.randn(32, 1, 4, 4)
    captured: dict[str, torch.Tensor] = {}
    hook = model.fc1.register_forward_hook(lambda _m, i, _o: captured.__setitem__("a", i[0]))
    logits = model(x)
    hook.remove()
    scored = _attribution_pass(model, model.fc1, x, captured, logits)
    again, inputs = scored()
    assert torch.equal(again, model(x))  # every call reruns the whole model
    assert inputs is captured["a"]


def _distill(build, state, x, y, monkeypatch, prune):
    """distill on ``(x, y)`` with ``prune`` in place of the pruning; the progress phases."""
    from fedforget.data import ArrayDataset
    from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner

    monkeypatch.setattr(distillation, "prune_forget_units", prune)
    events: list[tuple] = []
    request = UnlearningRequest(ArrayDataset(x.numpy(), y.numpy()), 10, "backdoor")
    context = UnlearningContext(
        state_to_numpy(build()), build, seed=0, progress=lambda *e: events.append(e)
    )
    model = build_unlearner("distill").unlearn(load_numpy_state(build(), state), request, context)
    return model, [event[0] for event in events]


def _prune_to_another_class(model, x, y, *_):
    """A pruning that leaves D_f at 0 %: the head predicts a class no D_f sample has."""
    head = classifier_head(model)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[(int(y.max()) + 1) % 10] = 10.0
    return [0]


@pytest.mark.parametrize(
    ("prune", "epochs_run"),
    [
        (_prune_to_another_class, False),
        (lambda *_: [0], True),  # pruned, but D_f still fits
        (lambda *_: [], True),  # nothing pruned
    ],
)
def test_no_distillation_epoch_runs_once_the_pruning_has_forgotten(
    make_config, monkeypatch, prune, epochs_run
):
    """Once the pruning has taken D_f to ``stop_accuracy`` an epoch would only cost clean
    accuracy: none runs, and the pruned model is the result."""
    build, state, x, y = _backdoored(make_config)
    model, phases = _distill(build, state, x, y, monkeypatch, prune)
    assert phases[0] == "pruning"
    assert ("unlearning" in phases) is epochs_run
    if not epochs_run:
        pruned = load_numpy_state(build(), state)
        prune(pruned, x, y)
        for name, value in model.state_dict().items():
            assert torch.equal(value, pruned.state_dict()[name]), name
