"""Conformance: every registered unlearner forgets D_f without destroying the rest.

The setting is a tiny federation (sklearn digits, 4 clients, in-process FedAvg from
:mod:`fedforget.federated`), so every need can be met: D_f, a retained sample, the stored
round history and training rounds on the clients (without their deleted samples), and a
small class-conditional GAN trained on the federation's data (MuGAN's ``generator``). A
method with a training-time hook (a client-side need: QuickDrop's synthetic sets, FedAU's
auxiliary heads, the example method's label counts) gets its own run of the same federation
with its hooks (a hook may change the model) and is scored on it, with what its hooks kept
as the request's ``client_state``: the harness names no method.

Three deletion modes: ``class`` (every client deletes its 3s), ``backdoor`` (triggered
samples spread over the clients) and ``client`` (client 0 of 3, which holds every 3 and a
third of the rest, leaves: a model without it cannot know 3s, so the test 3s measure the
forgetting). A
method defined for some modes only (:attr:`Unlearner.modes`) must refuse the others with a
one-line error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.config import ConfigError
from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.gan import build_conditional_gan, train_gan
from fedforget.metrics import Evaluator
from fedforget.models import build_model
from fedforget.needs import NEEDS
from fedforget.simulations.example_method import CountResetUnlearner, LabelCountsNeed
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning import (
    UNLEARNER_REGISTRY,
    UnknownUnlearnerError,
    UnlearningContext,
    UnlearningRequest,
    build_unlearner,
    unlearner_names,
)
from fedforget.unlearning.hooks import client_hooks, kept_by_clients

# The example method (its own client-side need, one module) runs through the same harness; it
# is registered for this module only, so that no other test sees an extra method.
METHODS = unlearner_names()
EXAMPLE = ((UNLEARNER_REGISTRY, CountResetUnlearner), (NEEDS, LabelCountsNeed))
for _registry, _entry in EXAMPLE:
    del _registry[_entry.name]


@pytest.fixture(scope="module", autouse=True)
def _example_registered():
    for registry, entry in EXAMPLE:
        registry.add(entry.name, entry)
    yield
    for registry, entry in EXAMPLE:
        del registry[entry.name]


FORGOTTEN_CLASS = 3
ROUNDS = 6
# digits' D_f is ~145 samples: a smaller batch gives the defaults' epochs enough steps.
SMALL_DATA_OPTIONS: dict[str, dict] = {
    "distill": {"batch_size": 16},
    "eu-k": {"batch_size": 16},  # 20 epochs of batch 64 on 400 samples: ~140 steps, undertrained
    "federaser": {"calibration_ratio": 1.0},  # 6 rounds on digits: half epochs undertrain
    "finetune": {"lr_scale": 1.0, "rounds": 8},  # 2x lr diverges on digits' batch of 16
    "quickdrop": {"distil_every": 8},  # half the default's steps: training 2.6x longer, not 4.7x
    "randomk": {"batch_size": 16},  # 400 retained samples: batch 64 gives ~70 repair steps
    "zmugan": {"generators": 2},  # 2 of the paper's 5 inversions: a few seconds on one core
}
GAN_EPOCHS = 30  # digits' 1,400 images: ~660 steps, a few seconds, class-recognisable 8x8 draws


def _learned_threes(make_leaving_client_federation):
    """The first of seeds 0-5 whose FedAvg learned the leaving client's 3s (test 3s > 0.75).

    FedAvg learns a class one client holds erratically, and which seeds learn it depends on
    the CPU's rounding (seed 0: 0.44 on an AVX-512 Xeon, above 0.7 on an AVX2 EPYC); a
    setup that never knew the 3s has nothing for a method to forget.
    """
    for seed in range(6):
        config, federation = make_leaving_client_federation("threes", seed)
        build = _builder(federation)
        torch.manual_seed(0)
        initial = state_to_numpy(build())
        trained = LocalFederation.from_federation(
            federation, build, config.train, drop_deleted=False
        ).run(initial, ROUNDS, [])
        if (
            Evaluator(federation).evaluate(load_numpy_state(build(), trained)).forget_test_accuracy
            > 0.75
        ):
            return config, federation
    raise AssertionError("FedAvg learned the 3s on none of seeds 0-5")


def _builder(federation):
    return lambda: build_model("lenet5", federation.num_classes, 1, federation.image_size)


def _setup(make_config, make_leaving_client_federation, mode: str):
    if mode == "client":
        config, federation = _learned_threes(make_leaving_client_federation)
    else:
        deletion = {"mode": mode, "share": 0.1}
        if mode == "class":
            deletion["forget_classes"] = [FORGOTTEN_CLASS]
        config = make_config(deletion=deletion, train={"batch_size": 16})
        federation = build_federation(config)

    build = _builder(federation)
    torch.manual_seed(0)
    initial = state_to_numpy(build())
    history: list = []
    full = LocalFederation.from_federation(federation, build, config.train, drop_deleted=False)
    trained = full.run(initial, ROUNDS, history)
    kept = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=True, seed=1
    )
    gan = None
    if mode == "class":  # the only mode a class-conditional GAN serves
        gan = build_conditional_gan(federation.num_classes, federation.train.x.shape[1:], seed=0)
        train_gan(gan, federation.train, epochs=GAN_EPOCHS, seed=0)
    return config, federation, build, initial, trained, history, kept, gan


MODES = ("class", "backdoor", "client")


@pytest.fixture(scope="module")
def federations(make_config, make_leaving_client_federation):
    """Trained tiny federations, one per deletion mode."""
    return {mode: _setup(make_config, make_leaving_client_federation, mode) for mode in MODES}


@pytest.fixture(scope="module")
def hooked_runs(federations):
    """``hooked_runs(name, mode)``: (trained weights, what the hooks kept) of the federation
    trained with method ``name``'s training-time hooks on its clients."""
    cache: dict[tuple[str, str], tuple] = {}

    def get(name: str, mode: str) -> tuple:
        if (name, mode) not in cache:
            config, federation, build, initial = federations[mode][:4]
            unlearner = build_unlearner(name, **SMALL_DATA_OPTIONS.get(name, {}))
            hooks = client_hooks(federation, config, unlearner)
            full = LocalFederation.from_federation(
                federation, build, config.train, drop_deleted=False, step_hooks=hooks
            )
            trained = full.run(initial, ROUNDS)
            cache[name, mode] = trained, {unlearner.hook_need: kept_by_clients(hooks)}
        return cache[name, mode]

    return get


def _forgotten_and_kept(evaluator: Evaluator, model, mode: str) -> tuple[float, float]:
    metrics = evaluator.evaluate(model)
    if mode in ("class", "client"):  # client 0 held every 3: the test 3s are its data
        return metrics.forget_test_accuracy, metrics.retain_test_accuracy
    return metrics.backdoor_success, metrics.test_accuracy


# Faithful methods measured not to forget in this setting (see each module's docstring):
# they must still keep the rest; the day one of them forgets, the test says so.
DOES_NOT_FORGET = {
    ("nad", "class"): "NAD distils attention on clean data only (MNIST: class 3 67.5 % left)",
    ("nad", "backdoor"): "NAD never activates the trigger's pathway (MNIST: backdoor 87.7 %)",
    ("cf-k", "class"): "at the paper's lr 1e-4 CF-k barely moves a model that fits D_r "
    "(MNIST: class 3 95.4 % left)",
    ("cf-k", "backdoor"): "fine-tuning the head on clean data keeps the trigger (MNIST: 99.9 %)",
    ("eu-k", "backdoor"): "on 8x8 digits the frozen conv layers carry the 2x2 trigger "
    "(MNIST: EU-3 takes the backdoor to 0.41 %)",
    ("cf-k", "client"): "fine-tuning the head on the retained sample keeps the 3s",
}

# Sample-forgetting methods given a whole leaving client as D_f: they drive all of it to wrong
# answers, its other classes included, where a retrained model keeps those at test level
# (over-unlearning; the papers follow the step with FedAvg rounds that recover). They must
# still forget the client's 3s; whether the rest drops past the margin depends on the CPU's
# rounding (distill lost 0.17 of it on an AVX2 EPYC, more elsewhere; topk the reverse), so a
# method here that keeps the rest is held to the plain test instead.
OVER_FORGETS_CLIENT = "misclassifies the leaving client's other classes too (no recovery rounds)"
OVER_FORGETS = {
    (name, "client"): OVER_FORGETS_CLIENT
    for name in ("distill", "fedosd", "fedquit", "gradient-ascent", "lau", "topk")
}
# Fast-FedUL takes the leaving client's share out of every round without training: a third
# of this federation's updates (the rest lost 0.31 on an AVX-512 Xeon; test_client_removal.py
# measures 10-29 points on the backdoor federation).
OVER_FORGETS["fast-fedul", "client"] = "removing a third of the updates costs the rest"
# Forgetting that holds on some CPUs and not on others; the rest must still be kept.
FRAGILE = {
    ("quickdrop", "client"): "its fixed ascent steps are a cliff on the leaving client's "
    "synthetic set (test_client_removal.py, QUICKDROP_CLIENT_CLIFF)",
    ("nad", "client"): "NAD distils attention on clean data only: the 3s stayed on an AVX2 "
    "EPYC, went 0.82 -> 0.29 on an AVX-512 Xeon (another seed's federation)",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", METHODS)
def test_unlearner_forgets_and_keeps_the_rest(federations, hooked_runs, name, mode):
    config, federation, build, initial, trained, history, kept, gan = federations[mode]
    client_state: dict = {}
    hook_need = build_unlearner(name).hook_need
    if hook_need is not None and mode in build_unlearner(name).modes:
        trained, client_state = hooked_runs(name, mode)
    evaluator = Evaluator(federation)
    before_forgotten, before_kept = _forgotten_and_kept(
        evaluator, load_numpy_state(build(), trained), mode
    )
    # the setup really learned (FedAvg learns the 3s of the one client holding them less well)
    assert before_forgotten > (0.7 if mode == "client" else 0.8) and before_kept > 0.8

    rng = np.random.default_rng(0)
    retain_ids = federation.retain_indices()
    forget_classes = tuple(config.deletion.forget_classes) if mode == "class" else ()
    leaving = (0,) if mode == "client" else ()
    request = UnlearningRequest(
        forget=federation.forget_set(),
        num_classes=federation.num_classes,
        mode=mode,
        forget_classes=forget_classes,
        retain=federation.train.subset(np.sort(rng.choice(retain_ids, 400, replace=False))),
        history=tuple(history),
        leaving_clients=leaving,
        generator=gan,
        client_state=client_state,
    )
    context = UnlearningContext(
        initial_state=initial,
        build_model=build,
        federated_train=kept.federated_train,
        local_epochs=config.train.local_epochs,
        local_lr=config.train.lr,
    )
    unlearner = build_unlearner(name, **SMALL_DATA_OPTIONS.get(name, {}))
    if mode not in unlearner.modes:  # refused with one line that names the method
        with pytest.raises(ConfigError, match=rf"^{name} .*'{mode}'") as refusal:
            unlearner.unlearn(load_numpy_state(build(), trained), request, context)
        assert "\n" not in str(refusal.value)
        return
    unlearned = unlearner.unlearn(load_numpy_state(build(), trained), request, context)
    if name == "none":  # the bar every method must clear: the model as it was
        assert all(np.array_equal(v, trained[k]) for k, v in state_to_numpy(unlearned).items())
        return

    after_forgotten, after_kept = _forgotten_and_kept(evaluator, unlearned, mode)
    assert all(np.array_equal(v, initial[k]) for k, v in initial.items())  # w_0 untouched
    if (name, mode) in OVER_FORGETS and after_kept <= before_kept - 0.25:
        assert after_forgotten < 0.5 * before_forgotten
        pytest.xfail(OVER_FORGETS[name, mode])
    assert after_kept > before_kept - 0.25
    if (name, mode) in FRAGILE and after_forgotten >= 0.5 * before_forgotten:
        assert after_forgotten < before_forgotten, f"{name} does not move the forgotten data"
        pytest.xfail(FRAGILE[name, mode])
    if (name, mode) in DOES_NOT_FORGET:
        assert after_forgotten >= 0.5 * before_forgotten, f"{name} forgets now: update the list"
        pytest.xfail(DOES_NOT_FORGET[name, mode])
    assert after_forgotten < 0.5 * before_forgotten


def test_unknown_unlearner_lists_the_choices():
    with pytest.raises(UnknownUnlearnerError, match=r"choose one of: .*distill"):
        build_unlearner("nope")


def test_unknown_option_is_a_config_error():
    from fedforget.config import ConfigError

    with pytest.raises(ConfigError, match="distill option epochs_typo"):
        build_unlearner("distill", epochs_typo=3)
