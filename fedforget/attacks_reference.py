"""Reference models for the ``calibrated`` membership attack in simulate, compare and sweep runs.

The calibrated attack (:mod:`fedforget.attacks`) scores a sample by how much more confident
the target model is on it than *reference models that never saw it* (Watson et al., 2022's
difficulty calibration; Carlini et al., 2022's LiRA in its offline form, where the reference
("shadow") models are trained once, without the target's candidate samples). Its references
must therefore train on data that no client holds and that the attack never scores: here the
training samples that ``data.train_samples`` left out of the federation (its complement in
the source's training split). The declared validation set keeps its uses (distill's target,
the relay's check), and the test set stays the attack's non-members, so neither can serve.

Each reference imitates the target at the deletion round: a federation of ``clients``
clients on a fresh draw of ``train_samples`` auxiliary samples, split by the run's partition
scheme, trained in-process (:class:`fedforget.federated.LocalFederation`, no Flower) with the
run's local training settings for ``deletion.round`` FedAvg rounds from its own seeded w_0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedforget.attacks import reference_confidences
from fedforget.config import ConfigError, SimulationConfig
from fedforget.data.deletion import kept_train_indices, source_options
from fedforget.data.partition import partition_indices
from fedforget.data.sources import ArrayDataset, build_source
from fedforget.federated import LocalFederation
from fedforget.metrics import Evaluator
from fedforget.models import ClassifierModel
from fedforget.training import load_numpy_state, predict_proba, state_to_numpy

REFERENCE_MODELS = 8
"""Reference federations per run: the offset's noise falls as 1/sqrt(K); K = 8 costs 8 trainings
of the federation up to the deletion round (LiRA's per-example variances would need tens)."""

SEED_OFFSET = 10_000  # reference k uses seed SEED_OFFSET * (run seed + 1) + k: never the run's


def check_reference_data(config: SimulationConfig) -> None:
    """Refuse ``--mia calibrated`` when no training sample is left out of the federation.

    Checked per run (not by the configuration's validator): a sweep's base configuration
    gets ``data.train_samples`` from its scenarios.
    """
    if config.mia == "calibrated" and config.data.train_samples is None:
        raise ConfigError(
            "--mia calibrated trains reference models on training samples no client holds:"
            " set data.train_samples below the dataset's size"
        )


def auxiliary_data(config: SimulationConfig) -> ArrayDataset:
    """The source's training samples that no client holds (the complement of ``train_samples``).

    Raises
    ------
    ConfigError
        When every training sample went to the clients, or fewer than ``train_samples`` are
        left (a reference must train on as many samples as the federation).
    """
    check_reference_data(config.model_copy(update={"mia": "calibrated"}))
    bundle = build_source(config.data.dataset, **source_options(config)).load()
    unused = np.setdiff1d(np.arange(len(bundle.train)), kept_train_indices(bundle, config))
    if len(unused) < config.data.train_samples:
        raise ConfigError(
            f"--mia calibrated: only {len(unused)} training samples are left outside the "
            f"federation, its reference models need {config.data.train_samples}: lower "
            "data.train_samples"
        )
    return bundle.train.subset(unused)


def reference_trainer(
    config: SimulationConfig,
    auxiliary: ArrayDataset,
    build: Callable[[], ClassifierModel],
    device: torch.device | None = None,
) -> Callable[[int], Callable[[np.ndarray], np.ndarray]]:
    """``train(k)``: the k-th reference federation's ``probs(x)`` (see the module docstring)."""
    data = config.data

    def train_reference(k: int) -> Callable[[np.ndarray], np.ndarray]:
        seed = SEED_OFFSET * (config.seed + 1) + k
        rng = np.random.default_rng(seed)
        draw = auxiliary.subset(np.sort(rng.choice(len(auxiliary), data.train_samples, False)))
        parts = partition_indices(
            draw.y, config.clients, data.partition, seed, data.alpha, data.shards_per_client
        )
        clients = {c: draw.subset(p) for c, p in enumerate(parts)}
        torch.manual_seed(seed)
        federation = LocalFederation.with_training(
            clients, build, config.train, seed=seed, device=device
        )
        state = federation.run(state_to_numpy(build()), config.deletion.round)
        model = load_numpy_state(build(), state)
        return lambda x: predict_proba(model, x, device)

    return train_reference


def attach_references(
    evaluator: Evaluator,
    config: SimulationConfig,
    build: Callable[[], ClassifierModel],
    count: int = REFERENCE_MODELS,
) -> None:
    """Give ``evaluator`` reference confidences when the run asks for ``--mia calibrated``.

    A no-op for every other attack (they need no reference models).
    """
    if config.mia != "calibrated":
        return
    train_reference = reference_trainer(config, auxiliary_data(config), build, evaluator.device)
    evaluator.set_reference(reference_confidences(train_reference, count, evaluator.attack_sets()))
