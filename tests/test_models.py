"""Tests for the model zoo and its registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedforget.models import (
    MODEL_REGISTRY,
    ClassifierModel,
    UnknownModelError,
    build_model,
    model_names,
    register_model,
)

BUILTIN = {"lenet5", "lenet-att", "resnet20", "resnet32", "resnet56"}
# (num_classes, in_channels, image_size): MNIST, CIFAR-10, AT&T faces.
CONFIGS = [(10, 1, 28), (10, 3, 32), (40, 1, 64)]
BATCH = 2


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _images(in_channels: int, image_size: int, batch: int = BATCH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, in_channels, image_size, image_size, generator=generator)


@pytest.fixture(params=CONFIGS, ids=lambda c: "x".join(map(str, c)))
def config(request: pytest.FixtureRequest) -> tuple[int, int, int]:
    return request.param


@pytest.fixture(params=sorted(BUILTIN))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_builtin_models_registered_and_sorted() -> None:
    names = model_names()
    assert set(names) >= BUILTIN
    assert names == sorted(names)
    assert set(names) == set(MODEL_REGISTRY)


def test_forward_shape(name: str, config: tuple[int, int, int]) -> None:
    num_classes, in_channels, image_size = config
    model = build_model(name, num_classes, in_channels, image_size)
    assert isinstance(model, ClassifierModel)
    assert model.num_classes == num_classes
    logits = model(_images(in_channels, image_size))
    assert logits.shape == (BATCH, num_classes)
    assert torch.isfinite(logits).all()


def test_forward_features_matches_forward(name: str, config: tuple[int, int, int]) -> None:
    num_classes, in_channels, image_size = config
    torch.manual_seed(0)
    model = build_model(name, num_classes, in_channels, image_size).eval()
    x = _images(in_channels, image_size)
    logits, features = model.forward_features(x)
    assert list(features) == list(model.feature_layers)
    assert len(model.feature_layers) >= 1
    for feature in features.values():
        assert feature.dim() == 4
        assert feature.shape[0] == BATCH
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-6)


def test_features_come_from_the_same_pass(name: str) -> None:
    # A feature map from a second forward pass would not be in the graph of the logits.
    model = build_model(name, 10, 1, 28).eval()
    logits, features = model.forward_features(_images(1, 28))
    grads = torch.autograd.grad(logits.sum(), list(features.values()))
    assert all(g.shape == f.shape for g, f in zip(grads, features.values(), strict=True))


def test_head_of_embed_is_forward(name: str, config: tuple[int, int, int]) -> None:
    num_classes, in_channels, image_size = config
    model = build_model(name, num_classes, in_channels, image_size).eval()
    x = _images(in_channels, image_size)
    with torch.no_grad():
        embedding = model.embed(x)
        assert embedding.dim() == 2 and embedding.shape[0] == BATCH
        assert torch.allclose(model.head(embedding), model(x), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "expected_dim"),
    [("lenet5", 84), ("lenet-att", 256), ("resnet20", 64), ("resnet56", 64)],
)
def test_embedding_dim(name: str, expected_dim: int) -> None:
    model = build_model(name, 10, 3, 32)
    assert model.embed(_images(3, 32)).shape == (BATCH, expected_dim)


def test_lenet5_feature_shapes_on_mnist() -> None:
    model = build_model("lenet5", 10, 1, 28)
    assert model.fc1.in_features == 16 * 5 * 5
    _, features = model.forward_features(_images(1, 28))
    assert features["conv1"].shape == (BATCH, 6, 28, 28)
    assert features["conv2"].shape == (BATCH, 16, 10, 10)
    # Feature maps are taken after the ReLU.
    assert (features["conv1"] >= 0).all() and (features["conv2"] >= 0).all()


def test_lenet_att_feature_shape_on_faces() -> None:
    model = build_model("lenet-att", 40, 1, 64)
    assert model.fc1.in_features == 32 * 16 * 16
    _, features = model.forward_features(_images(1, 64))
    assert features["conv1"].shape == (BATCH, 32, 64, 64)


def test_resnet_stage_shapes() -> None:
    model = build_model("resnet20", 10, 3, 32)
    _, features = model.forward_features(_images(3, 32))
    assert features["layer1"].shape == (BATCH, 16, 32, 32)
    assert features["layer2"].shape == (BATCH, 32, 16, 16)
    assert features["layer3"].shape == (BATCH, 64, 8, 8)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6)],
)
def test_resnet_parameter_count(name: str, expected: float) -> None:
    count = _params(build_model(name, 10, 3, 32))
    assert abs(count - expected) / expected < 0.05


def test_resnet_depth() -> None:
    for name, n in (("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        model = build_model(name, 10, 3, 32)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert len(convs) + len(linears) == 6 * n + 2


@pytest.mark.parametrize("model_name", ["lenet5", "lenet-att", "resnet20"])
def test_small_8x8_input(model_name: str) -> None:
    model = build_model(model_name, 10, 1, 8).eval()
    x = _images(1, 8)
    logits, features = model.forward_features(x)
    assert logits.shape == (BATCH, 10)
    assert all(f.shape[-1] >= 1 and f.shape[-2] >= 1 for f in features.values())


def test_too_small_image_rejected() -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_model("resnet20", 10, 3, 4)
    with pytest.raises(ValueError, match="image_size"):
        build_model("lenet5", 10, 1, 2)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UnknownModelError) as excinfo:
        build_model("no-such-net", 10, 1, 28)
    message = str(excinfo.value)
    assert message.startswith("unknown model 'no-such-net'; choose one of: ")
    assert message.endswith(", ".join(model_names()))
    assert isinstance(excinfo.value, KeyError) and isinstance(excinfo.value, ValueError)


def test_nonpositive_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model("lenet5", 0, 1, 28)


def test_register_model_adds_and_refuses_duplicates() -> None:
    def tiny(num_classes: int, in_channels: int, image_size: int) -> ClassifierModel:
        return MODEL_REGISTRY["lenet5"](num_classes, in_channels, image_size)

    try:
        assert register_model("tiny-test-net")(tiny) is tiny
        assert "tiny-test-net" in model_names()
        assert build_model("tiny-test-net", 3, 1, 8)(_images(1, 8)).shape == (BATCH, 3)
        with pytest.raises(ValueError, match="already registered"):
            register_model("lenet5")(tiny)
        assert MODEL_REGISTRY["lenet5"] is not tiny
    finally:
        MODEL_REGISTRY.pop("tiny-test-net", None)
    assert "tiny-test-net" not in model_names()


def test_lenet5_loss_decreases_with_sgd() -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1, 28)
    x = _images(1, 28, batch=8)
    y = torch.arange(8) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert losses[-1] == min(losses)


def test_load_model_reads_weights_and_says_what_is_wrong_in_one_line(tmp_path):
    from fedforget.models import load_model

    model = build_model("lenet5", 10, 1, 28)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", "lenet5", 10, 1, 28)
    pairs = zip(loaded.parameters(), model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    (tmp_path / "text.pt").write_text("not weights")
    for args, fragment in [
        ((tmp_path / "none.pt", "lenet5", 10, 1, 28), "no such model file"),
        ((tmp_path / "m.pt", "lenet5", 10, 3, 32), "does not hold lenet5 weights for 3x32x32"),
        ((tmp_path / "text.pt", "lenet5", 10, 1, 28), "not a torch weights file"),
    ]:
        with pytest.raises(ValueError, match=fragment) as info:
            load_model(*args)
        assert "\n" not in str(info.value)
