"""Small federations and in-process runs that the tests and ``experiments/`` share.

A number in the docs comes from an experiment, and the test that guards it builds the same
federation: keeping that set-up here, once, means the test checks the setting the number
was measured on. Nothing here runs Flower: federations train in this process
(:class:`fedforget.federated.LocalFederation`), single-threaded where it matters, so that the
experiments reproduce on a laptop in minutes.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedforget.config import RecoveryConfig, SimulationConfig, validate_config
from fedforget.data import build_federation
from fedforget.data.deletion import DeletionPlan, Federation
from fedforget.data.modes import Kind, deletion_mode
from fedforget.data.sources import ArrayDataset
from fedforget.federated import LocalFederation, State
from fedforget.metrics import Evaluator
from fedforget.models import build_model
from fedforget.recovery import RelayResult, in_process_callbacks, run_relay, validation_objective
from fedforget.training import accuracy, load_numpy_state, state_to_numpy, to_tensors
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner
from fedforget.unlearning.distillation import logit_margins
from fedforget.unlearning.fedau import auxiliary_trainings

# -- digits federations -------------------------------------------------------------------------


def digits_config(**overrides: object) -> SimulationConfig:
    """A federation of 4 clients on digits (8x8), LeNet-5, small trigger.

    A dict override is merged into the section it names, anything else replaces the field.
    """
    values: dict = {
        "clients": 4,
        "model": "lenet5",
        "data": {"dataset": "digits"},
        "train": {"rounds": 3, "local_epochs": 2, "lr": 0.05, "batch_size": 32},
        "deletion": {"round": 2, "trigger_size": 2, "share": 0.06},
        "recovery": {"min_accuracy": 0.5, "max_hops": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return validate_config(values)


def _threes(seed: int) -> tuple[SimulationConfig, Federation, list[np.ndarray], DeletionPlan]:
    clients = 3
    config = digits_config(
        clients=clients,
        seed=seed,
        deletion={"mode": "class", "forget_classes": [3], "share": 0.1},
        train={"batch_size": 16},
    )
    base = build_federation(config)
    threes = np.flatnonzero(base.train.y == 3)
    others = np.flatnonzero(base.train.y != 3)
    split = np.array_split(np.random.default_rng(seed).permutation(others), clients)
    indices = [np.union1d(threes, split[0])] + [np.sort(part) for part in split[1:]]
    return config, base, indices, DeletionPlan("client", {0: indices[0]}, forget_classes=(3,))


def _attacker(seed: int) -> tuple[SimulationConfig, Federation, list[np.ndarray], DeletionPlan]:
    config = digits_config(
        clients=4, seed=seed, deletion={"mode": "backdoor", "share": 0.1}, train={"batch_size": 16}
    )
    base = build_federation(config)
    poisoned = base.plan.forget_indices
    client0 = np.union1d(poisoned, base.client_indices[0])
    indices = [client0] + [np.setdiff1d(ci, poisoned) for ci in base.client_indices[1:]]
    plan = DeletionPlan("client", {0: client0}, backdoor_target=base.plan.backdoor_target)
    return config, base, indices, plan


_LEAVING_CLIENTS = {"threes": _threes, "backdoor": _attacker}


def leaving_client_federation(kind: str, seed: int = 0) -> tuple[SimulationConfig, Federation]:
    """A client-mode federation on digits in which client 0, the leaving client, holds ...

    ``threes`` (3 clients): every training 3 and an equal share of the other classes, so a
    model without it cannot know 3s (the plan's ``forget_classes`` = (3,) makes the Evaluator
    report the test 3s apart). FedAvg learns a class held by one client erratically: after 6
    rounds the test 3s scored 0.32-0.87 over seeds 0-2 with 4 clients, 0.76-0.97 with 3, and
    0.08-0.35 when client 0 held nothing but 3s.
    ``backdoor`` (4 clients): every triggered sample (relabelled to the target) plus its own
    clean share: the malicious client of Halimi et al. and Fast-FedUL, whose trigger clean
    training keeps.

    Returns ``(config, federation)``; the config's train settings are the conformance ones.
    """
    builder = _LEAVING_CLIENTS.get(kind)
    if builder is None:
        raise ValueError(f"unknown leaving-client federation {kind!r}")
    config, base, indices, plan = builder(seed)
    trigger = base.trigger_size if plan.backdoor_target is not None else 0
    federation = Federation(
        base.name, base.train, base.test, base.num_classes, indices, plan, trigger
    )
    return config, federation


@dataclass(frozen=True)
class TrainedDigits:
    """A digits federation, its model constructor, w_0 and the state FedAvg reached."""

    federation: Federation
    build: Any  # () -> nn.Module
    initial: State
    trained: State


def trained_digits(mode: str, seed: int, rounds: int = 8) -> TrainedDigits:
    """:func:`digits_config` with D_f = 10 % (``random``: on client 0), trained with D_f.

    The setting of distill's deletion-aware target (``tests/test_deletion_aware.py``,
    ``experiments.quality_tolerance``): 4 local epochs of batch 16, after which the model scores
    D_f above unseen data, so there is something specific to D_f to forget.
    """
    torch.set_num_threads(1)
    deletion: dict[str, object] = {"mode": mode, "share": 0.1}
    if deletion_mode(mode).kind == Kind.RANDOM:
        deletion["deleting_clients"] = [0]
    config = digits_config(
        seed=seed, deletion=deletion, train={"batch_size": 16, "local_epochs": 4}
    )
    federation = build_federation(config)

    def build() -> nn.Module:
        return build_model("lenet5", federation.num_classes, 1, federation.image_size)

    torch.manual_seed(seed)
    initial = state_to_numpy(build())
    local = LocalFederation.from_federation(federation, build, config.train, drop_deleted=False)
    return TrainedDigits(federation, build, initial, local.run(initial, rounds))


def mean_logit_margin(model: nn.Module, data: ArrayDataset) -> float:
    """Mean logit margin of the true label over the best other one (distill's scale)."""
    x, y = to_tensors(data, torch.device("cpu"))
    return float(logit_margins(model, x, y).mean())


# -- FedAU on digits ----------------------------------------------------------------------------

FEDAU_ROUNDS = 6
FEDAU_KINDS = ("class", "threes", "backdoor", "samples")
FEDAU_DELETIONS = {
    "class": {"mode": "class", "forget_classes": [3], "share": 0.1},
    "samples": {"mode": "backdoor", "share": 0.1},
}
"""The FedAU settings that are a configured deletion (the others: a leaving client)."""


def fedau_federation(kind: str, seed: int) -> tuple[SimulationConfig, Federation]:
    """``(config, federation)`` of one FedAU setting on digits (its plan says the mode).

    ``class``: every client deletes its 3s; ``threes``: client 0, holding every 3, leaves;
    ``backdoor``: client 0, the attacker, leaves; ``samples``: 10 % triggered samples over
    4 clients (a mode FedAU refuses; :func:`fedau_outcome` measures its operation anyway).
    """
    if kind in FEDAU_DELETIONS:
        config = digits_config(seed=seed, deletion=FEDAU_DELETIONS[kind], train={"batch_size": 16})
        return config, build_federation(config)
    return leaving_client_federation(kind, seed)


def fedau_scores(evaluator: Evaluator, model: nn.Module) -> tuple[float, float]:
    """``(forgotten, kept)``: backdoor success and test accuracy when D_f planted a backdoor,
    else the accuracy on the test samples of the deleted class and on the rest."""
    metrics = evaluator.evaluate(model)
    if metrics.backdoor_success is not None:
        return metrics.backdoor_success, metrics.test_accuracy
    return metrics.forget_test_accuracy, metrics.retain_test_accuracy


def fedau_outcome(kind: str, seed: int, options: dict | None = None) -> dict[str, Any]:
    """Train with FedAU's auxiliary heads, unlearn, retrain: ``(forgotten, kept)`` of each.

    Returns ``before``, ``after`` (FedAU) and ``retrain`` (FedAvg without the deleted data from
    the same w_0 for the same rounds) as ``(forgotten, kept)`` pairs, and the auxiliary heads'
    training seconds (``auxiliary_seconds``).
    """
    config, fed = fedau_federation(kind, seed)
    kind_of_deletion = fed.plan.deletion_mode.kind

    def build() -> nn.Module:
        return build_model("lenet5", fed.num_classes, 1, fed.image_size)

    torch.manual_seed(seed)
    initial = state_to_numpy(build())
    fedau = build_unlearner("fedau", **(options or {}))
    classes = tuple(fed.plan.forget_classes) if kind_of_deletion == Kind.CLASS else ()
    clients = {}
    for cid in range(fed.num_clients):
        data, ids = fed.client_data(cid, False)
        clients[cid] = (data, fed.is_deleted(ids))
    train = config.train
    trainings = auxiliary_trainings(
        clients, fedau, kind_of_deletion, fed.num_classes, classes, lr=train.lr,
        batch_size=train.batch_size, seed=seed,
    )  # fmt: skip
    full = LocalFederation.from_federation(
        fed, build, train, drop_deleted=False, seed=seed, step_hooks=trainings
    )
    trained = full.run(initial, FEDAU_ROUNDS)
    kept = LocalFederation.from_federation(fed, build, train, drop_deleted=True, seed=seed)
    retrained = kept.run(initial, FEDAU_ROUNDS)
    request = UnlearningRequest(
        forget=fed.forget_set(),
        num_classes=fed.num_classes,
        # ``samples``: the mode FedAU refuses; its operation is measured as for a client's
        mode=fed.plan.mode if kind_of_deletion != Kind.BACKDOOR else Kind.CLIENT.value,
        forget_classes=classes,
        leaving_clients=(0,) if fed.plan.deletion_mode.clients_leave else (),
        client_state={"auxiliary": {cid: t.state() for cid, t in trainings.items()}},
    )
    context = UnlearningContext(initial_state=initial, build_model=build, seed=seed)
    unlearned = fedau.unlearn(load_numpy_state(build(), trained), request, context)
    evaluator = Evaluator(fed)
    return {
        "before": fedau_scores(evaluator, load_numpy_state(build(), trained)),
        "after": fedau_scores(evaluator, unlearned),
        "retrain": fedau_scores(evaluator, load_numpy_state(build(), retrained)),
        "auxiliary_seconds": sum(t.spent_seconds() for t in trainings.values()),
    }


# -- trained federations with their retrain reference (cached) ----------------------------------

VALIDATION_SAMPLES = 2000  # the server's declared validation set: the first test samples
RUN_CACHE = Path(
    os.environ.get("FEDFORGET_QUALITY_CACHE", Path.home() / ".cache" / "fedforget" / "quality")
)


@dataclass
class Run:
    """One trained federation, its retrain reference and the data splits to score them on."""

    config: SimulationConfig
    federation: Federation
    initial: State
    trained: State
    retrained: State
    validation: ArrayDataset
    test: ArrayDataset
    seconds_per_round: float

    def build(self) -> nn.Module:
        f = self.federation
        return build_model(self.config.model, f.num_classes, f.in_channels, f.image_size)

    def model(self, state: State) -> nn.Module:
        return load_numpy_state(self.build(), state)

    def scores(self, state: State) -> dict[str, float]:
        model = self.model(state)
        return {
            "test": accuracy(model, self.test),
            "forget": accuracy(model, self.federation.forget_set()),
        }


def make_run(config: SimulationConfig, rounds: int) -> Run:
    """Train ``rounds`` FedAvg rounds with D_f and, from the same w_0, without it.

    The trained states are cached under ``$FEDFORGET_QUALITY_CACHE`` (keyed by the
    configuration, arrays only), so re-running an experiment to tune the unlearning skips the
    training.
    """
    torch.set_num_threads(1)
    federation = build_federation(config)
    validation, test = _validation_split(federation.test)
    key = hashlib.sha256(f"{config.to_json()}|{rounds}".encode()).hexdigest()[:16]
    path = RUN_CACHE / f"{key}.npz"
    if path.exists():
        saved = load_array_groups(path)
        seconds = float(saved["timing"]["seconds_per_round"])
        states = (saved["initial"], saved["trained"], saved["retrained"])
        return Run(config, federation, *states, validation, test, seconds)
    run = _train(config, federation, rounds, validation, test)
    groups = {"initial": run.initial, "trained": run.trained, "retrained": run.retrained}
    timing = {"seconds_per_round": np.float64(run.seconds_per_round)}
    save_array_groups(path, {**groups, "timing": timing})
    return run


def _validation_split(test: ArrayDataset) -> tuple[ArrayDataset, ArrayDataset]:
    n = min(VALIDATION_SAMPLES, len(test) // 2)
    return test.subset(np.arange(n)), test.subset(np.arange(n, len(test)))


def save_array_groups(path: Path, groups: dict[str, dict[str, np.ndarray]]) -> None:
    """Write named groups of arrays (model states, per-sample figures) to one ``.npz`` file.

    Arrays only, read back without pickle (:func:`load_array_groups`): a cache file cannot run
    code.
    """
    arrays = {f"{group}:{key}": value for group, d in groups.items() for key, value in d.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_array_groups(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The groups :func:`save_array_groups` wrote, in their order."""
    groups: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as saved:
        for entry in saved.files:
            group, key = entry.split(":", 1)
            groups.setdefault(group, {})[key] = saved[entry]
    return groups


def _train(
    config: SimulationConfig,
    federation: Federation,
    rounds: int,
    validation: ArrayDataset,
    test: ArrayDataset,
) -> Run:
    def build() -> nn.Module:
        f = federation
        return build_model(config.model, f.num_classes, f.in_channels, f.image_size)

    torch.manual_seed(config.seed)
    initial = state_to_numpy(build())
    full = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=False, seed=config.seed
    )
    started = time.perf_counter()
    trained = full.run(initial, rounds)
    per_round = (time.perf_counter() - started) / rounds
    kept = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=True, seed=config.seed
    )
    retrained = kept.run(initial, rounds)
    return Run(config, federation, initial, trained, retrained, validation, test, per_round)


def default_relay(
    state: State,
    remaining: LocalFederation,
    lr: float,
    seed: int,
    eval_samples: int = 1000,
    validation: ArrayDataset | None = None,
    **kw: Any,
) -> RelayResult:
    """The default relay (:class:`RecoveryConfig`) over an in-process federation's clients.

    With ``validation`` its objective is that set's accuracy, as in the Flower strategy when
    the run declares one; ``kw`` goes to :func:`fedforget.recovery.run_relay` (e.g.
    ``before=``).
    """
    settings = RecoveryConfig()
    evaluate, train = in_process_callbacks(remaining, eval_samples, 1, seed=seed)
    validate = validation_objective(
        settings, validation, remaining.build_model, device=remaining.device
    )
    clients = sorted(remaining.clients)
    return run_relay(
        state, clients, evaluate, train, settings, lr, seed=seed, validate=validate, **kw
    )
