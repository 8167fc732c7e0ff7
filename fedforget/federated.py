"""In-process FedAvg without Flower: for tests, tuning and notebooks.

The Flower strategies (:mod:`fedforget.strategies`) are the real federation. This module runs
the same arithmetic (local SGD on each client's data, sample-weighted averaging) in one process,
so that unlearners that need training on the clients (``rounds``) or stored updates
(``history``) can be exercised and tuned in seconds. ``fedforget simulate`` does not use it,
but its records (:class:`ClientUpdate`, :class:`HistoryRound`) and :func:`weighted_average`
are shared with the strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedforget.config import TrainConfig
from fedforget.data.deletion import Federation
from fedforget.data.sources import ArrayDataset
from fedforget.models import ClassifierModel
from fedforget.training import StepHook, load_numpy_state, state_to_numpy, train_local

State = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClientUpdate:
    """One client's result of local training.

    Attributes
    ----------
    state : State
        Its weights (or, inside a :class:`HistoryRound`, its update ``local - global``).
    num_examples : int
        How many samples it trained on.
    client : int
        Its partition id (-1 when unknown).
    """

    state: State
    num_examples: int
    client: int = -1


@dataclass(frozen=True)
class HistoryRound:
    """What the server kept of one FedAvg round: every client's update (FedEraser).

    Attributes
    ----------
    round : int
        The FedAvg round (1-based).
    updates : dict[int, ClientUpdate]
        Per client (partition id): its update ``local - global`` and its sample count.
    """

    round: int
    updates: dict[int, ClientUpdate]

    def nbytes(self) -> int:
        """Bytes held by the stored client updates."""
        return sum(a.nbytes for u in self.updates.values() for a in u.state.values())


def weighted_average(updates: Sequence[ClientUpdate]) -> State:
    """FedAvg (Eq. 1 of paper 000): the sample-weighted mean of the clients' arrays."""
    total = sum(u.num_examples for u in updates)
    if total == 0:
        raise ValueError("cannot average updates of zero samples")
    keys = updates[0].state.keys()
    return {
        key: sum(
            u.state[key].astype(np.float64) * (u.num_examples / total) for u in updates
        ).astype(updates[0].state[key].dtype)
        for key in keys
    }


def difference(a: State, b: State) -> State:
    """``a - b`` array by array."""
    return {key: a[key] - b[key] for key in a}


def as_history(server_round: int, global_state: State, trained: list[ClientUpdate]) -> HistoryRound:
    """The round's record for FedEraser: each client's update ``local - global``."""
    return HistoryRound(
        round=server_round,
        updates={
            u.client: ClientUpdate(difference(u.state, global_state), u.num_examples, u.client)
            for u in trained
        },
    )


class LocalFederation:
    """FedAvg over in-memory client datasets, in this process.

    Parameters
    ----------
    clients : dict[int, ArrayDataset]
        Partition id -> local data.
    build_model : Callable[[], ClassifierModel]
        Makes a fresh model of the federation's architecture.
    epochs, lr, momentum, batch_size : int, float, float, int
        Local training settings (as ``TrainConfig``).
    seed : int
        Seeds the clients' batch order.
    step_hooks : Mapping[int, StepHook], optional
        Partition id -> called after each of that client's local steps (QuickDrop's
        distillation during training).
    """

    def __init__(
        self,
        clients: dict[int, ArrayDataset],
        build_model: Callable[[], ClassifierModel],
        *,
        epochs: int = 2,
        lr: float = 0.05,
        momentum: float = 0.9,
        batch_size: int = 50,
        seed: int = 0,
        device: torch.device | None = None,
        step_hooks: Mapping[int, StepHook] | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.step_hooks = dict(step_hooks or {})
        self.build_model = build_model
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.seed = seed
        self.device = device or torch.device("cpu")
        self._calls = 0

    def federated_train(self, state: State, epochs: int, lr: float) -> list[ClientUpdate]:
        """Every client with data trains ``state`` locally; returns their weights."""
        self._calls += 1
        seed = self.seed * 1_000_003 + self._calls * 10_007
        return self.train_clients(state, sorted(self.clients), epochs, lr, seed)

    def train_clients(
        self,
        state: State,
        clients: Sequence[int],
        epochs: int,
        lr: float,
        seed: int,
        proximal_mu: float = 0.0,
    ) -> list[ClientUpdate]:
        """``clients`` (those with data) train ``state`` locally, client ``c`` seeded
        ``seed + c``, with FedProx's term when ``proximal_mu`` > 0; returns their weights."""
        results = []
        for cid in clients:
            data = self.clients[cid]
            if len(data) == 0:
                continue
            model = load_numpy_state(self.build_model(), state)
            train_local(
                model,
                data,
                epochs=epochs,
                lr=lr,
                momentum=self.momentum,
                batch_size=self.batch_size,
                seed=seed + cid,
                device=self.device,
                proximal_mu=proximal_mu,
                on_step=self.step_hooks.get(cid),
            )
            results.append(ClientUpdate(state_to_numpy(model.cpu()), len(data), cid))
        return results

    def run(self, state: State, rounds: int, history: list[HistoryRound] | None = None) -> State:
        """``rounds`` FedAvg rounds from ``state``; append each round to ``history`` if given."""
        for _ in range(rounds):
            updates = self.federated_train(state, self.epochs, self.lr)
            if history is not None:
                history.append(as_history(len(history) + 1, state, updates))
            state = weighted_average(updates)
        return state

    @classmethod
    def from_federation(
        cls,
        federation: Federation,
        build_model: Callable[[], ClassifierModel],
        train: TrainConfig,
        *,
        drop_deleted: bool,
        seed: int = 0,
        device: torch.device | None = None,
        step_hooks: Mapping[int, StepHook] | None = None,
    ) -> LocalFederation:
        """The clients of a simulated federation, with or without their deleted samples."""
        clients = {
            cid: federation.client_data(cid, drop_deleted)[0]
            for cid in range(federation.num_clients)
        }
        return cls.with_training(
            clients, build_model, train, seed=seed, device=device, step_hooks=step_hooks
        )

    @classmethod
    def with_training(
        cls,
        clients: Mapping[int, ArrayDataset],
        build_model: Callable[[], ClassifierModel],
        train: TrainConfig,
        *,
        seed: int = 0,
        device: torch.device | None = None,
        step_hooks: Mapping[int, StepHook] | None = None,
    ) -> LocalFederation:
        """``clients`` training with a run's local-training settings (epochs, lr, momentum,
        batch size)."""
        train = train.resolved([len(data) for data in clients.values()])
        return cls(
            dict(clients),
            build_model,
            epochs=train.local_epochs,
            lr=train.lr,
            momentum=train.momentum,
            batch_size=train.batch_size,
            seed=seed,
            device=device,
            step_hooks=step_hooks,
        )
