"""Shared set-up of the quality scripts: an in-process federation, its training and a retrain.

Everything runs without Flower (:class:`fedforget.federated.LocalFederation`), single-threaded,
so that the numbers of docs/methods-quality.md can be reproduced on a laptop in minutes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedforget.config import RecoveryConfig, SimulationConfig
from fedforget.data import build_federation
from fedforget.data.deletion import Federation
from fedforget.data.sources import ArrayDataset
from fedforget.federated import LocalFederation, State
from fedforget.models import build_model
from fedforget.recovery import in_process_callbacks, run_relay, validation_objective
from fedforget.training import accuracy, load_numpy_state, state_to_numpy

VALIDATION_SAMPLES = 2000  # the server's declared validation set: the first test samples


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

    def build(self):
        f = self.federation
        return build_model(self.config.model, f.num_classes, f.in_channels, f.image_size)

    def model(self, state: State):
        return load_numpy_state(self.build(), state)

    def scores(self, state: State) -> dict[str, float]:
        model = self.model(state)
        return {
            "test": accuracy(model, self.test),
            "forget": accuracy(model, self.federation.forget_set()),
        }


def default_relay(
    state: State,
    remaining: LocalFederation,
    lr: float,
    seed: int,
    eval_samples: int = 1000,
    validation: ArrayDataset | None = None,
    **kw,
):
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


CACHE = Path(
    os.environ.get("FEDFORGET_QUALITY_CACHE", Path.home() / ".cache" / "fedforget" / "quality")
)


def make_run(config: SimulationConfig, rounds: int) -> Run:
    """Train ``rounds`` FedAvg rounds with D_f and, from the same w_0, without it.

    The trained states are cached under ``$FEDFORGET_QUALITY_CACHE`` (keyed by the
    configuration), so re-running a script to tune the unlearning skips the training.
    """
    torch.set_num_threads(1)
    federation = build_federation(config)
    key = hashlib.sha256(f"{config.to_json()}|{rounds}".encode()).hexdigest()[:16]
    path = CACHE / f"{key}.pkl"
    if path.exists():
        return Run(config, federation, *pickle.loads(path.read_bytes()))
    run = _train(config, federation, rounds)
    CACHE.mkdir(parents=True, exist_ok=True)
    fields = (run.initial, run.trained, run.retrained, run.validation, run.test)
    path.write_bytes(pickle.dumps((*fields, run.seconds_per_round)))
    return run


def _train(config: SimulationConfig, federation: Federation, rounds: int) -> Run:

    def build():
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
    test = federation.test
    n = min(VALIDATION_SAMPLES, len(test) // 2)
    validation = test.subset(np.arange(n))
    return Run(
        config,
        federation,
        initial,
        trained,
        retrained,
        validation,
        test.subset(np.arange(n, len(test))),
        per_round,
    )
