"""A method's training-time hooks on an in-process federation (tests, notebooks, tuning).

In a Flower run each client builds its hook from what it holds (:class:`HookSetup`) for every
training message; in one process (:class:`~fedforget.federated.LocalFederation`) each client
keeps one hook for the whole training, which :func:`client_hooks` builds the same way. What
the hooks kept is the method's ``client_state`` at the deletion (:func:`kept_by_clients`).
"""

from __future__ import annotations

import torch

from fedforget.config import SimulationConfig
from fedforget.data.deletion import Federation
from fedforget.federated import State
from fedforget.unlearning.base import HookSetup, TrainingHook, Unlearner


def client_hooks(
    federation: Federation,
    config: SimulationConfig,
    unlearner: Unlearner,
    *,
    device: torch.device | None = None,
    shared_model: bool = False,
) -> dict[int, TrainingHook]:
    """Each client's hook of ``unlearner`` (clients it gives none are left out).

    Every client sees its own data with its samples of the federation's deletion plan marked
    (the plan's mode and classes); seeds and training settings are the configuration's
    (client ``c`` seeded ``config.seed + c``).
    """
    mode = federation.plan.deletion_mode
    classes = tuple(federation.plan.forget_classes) if mode.names_classes else ()
    hooks = {}
    for cid in range(federation.num_clients):
        data, ids = federation.client_data(cid, drop_deleted=False)
        setup = HookSetup(
            data=data,
            deleting=federation.is_deleted(ids),
            kept=None,
            num_classes=federation.num_classes,
            mode=mode,
            forget_classes=classes,
            client_seed=config.seed + cid,
            round_seed=config.seed + cid,
            lr=config.train.lr,
            batch_size=config.train.batch_size,
            device=device or torch.device("cpu"),
            shared_model=shared_model,
        )
        hook = unlearner.training_hook(setup)
        if hook is not None:
            hooks[cid] = hook
    return hooks


def kept_by_clients(hooks: dict[int, TrainingHook]) -> dict[int, State]:
    """What each client's hook kept (the clients that kept nothing are left out)."""
    kept = {cid: hook.kept() for cid, hook in sorted(hooks.items())}
    return {cid: state for cid, state in kept.items() if state}
