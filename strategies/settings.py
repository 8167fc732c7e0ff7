"""One settings object per strategy, built from the run's :class:`SimulationConfig`.

The clients learn the deletion (mode, classes), the local training and the seed from the
configuration sent in every message (``fedforget-config``); the strategy must act on the same
values. :class:`StrategySettings` therefore keeps the configuration itself and derives every
strategy setting from it, and the message config it sends is that configuration's JSON: the
two sides cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from fedforget import protocol as P
from fedforget.config import ConfigError, RecoveryConfig, SimulationConfig
from fedforget.data import resolve_training
from fedforget.data.modes import DeletionMode


class StrategySettings(BaseModel):
    """What a :class:`~fedforget.strategies.FederatedUnlearning` needs besides its parts.

    Attributes
    ----------
    config : SimulationConfig
        The run's configuration: the single source of every derived setting below, and the
        JSON the clients receive.
    num_classes : int
        Classes of the federation's model.
    image_shape : tuple of int
        ``(C, H, W)`` of the federation's images (the shape of an empty D_f for methods that
        never receive one).
    branch : str or None
        ``fedforget compare`` names each branch in its messages, so that a client keeps one
        deletion state per branch; ``None`` sends no branch name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: SimulationConfig
    num_classes: int
    image_shape: tuple[int, ...] = (1, 1, 1)
    branch: str | None = None

    @classmethod
    def from_config(
        cls,
        config: SimulationConfig,
        *,
        num_classes: int,
        image_shape: Iterable[int] = (1, 1, 1),
        branch: str | None = None,
        mode: str | None = None,
        forget_classes: Iterable[int] | None = None,
    ) -> StrategySettings:
        """The settings of a strategy that serves ``config``'s clients.

        ``mode`` and ``forget_classes`` are optional statements of the deletion the caller
        expects; when given they must agree with ``config`` (whose values the clients act on).

        Raises
        ------
        ConfigError
            When ``mode`` or ``forget_classes`` disagree with ``config.deletion``.

        Training settings left to the data are derived here
        (:func:`fedforget.data.resolve_training`): the clients act on the values every
        message carries, so they are the run's.
        """
        if config.task == "classify":
            config = resolve_training(config)
        deletion = config.deletion
        if mode is not None and mode != deletion.mode:
            raise ConfigError(
                f"strategy mode '{mode}' disagrees with the clients' configuration "
                f"(deletion.mode '{deletion.mode}'); set it in the configuration only"
            )
        if forget_classes is not None and sorted(forget_classes) != sorted(deletion.forget_classes):
            raise ConfigError(
                f"strategy forget classes {sorted(forget_classes)} disagree with the clients' "
                f"configuration (deletion.forget_classes {sorted(deletion.forget_classes)})"
            )
        shape = tuple(int(s) for s in image_shape)
        return cls(config=config, num_classes=num_classes, image_shape=shape, branch=branch)

    # ------------------------------------------------------------------ what clients receive
    def message_config(self) -> dict[str, str]:
        """Entries of every message's config: the run configuration (and the branch)."""
        entries = {P.RUN_CONFIG_KEY: self.config.to_json()}
        if self.branch is not None:
            entries[P.BRANCH] = self.branch
        return entries

    # ------------------------------------------------------------------ derived settings
    @property
    def mode(self) -> DeletionMode:
        """The configured deletion mode (:mod:`fedforget.data.modes`)."""
        return self.config.deletion_mode

    @property
    def forget_classes(self) -> tuple[int, ...]:
        """The classes deleted in ``class`` mode."""
        return tuple(self.config.deletion.forget_classes)

    @property
    def clients_leave(self) -> bool:
        """Whether deleting clients leave the federation with their data."""
        return self.mode.clients_leave

    @property
    def seed(self) -> int:
        """Seeds node sampling, the unlearner and the clients' batch order."""
        return self.config.seed

    @property
    def timeout(self) -> float:
        """Seconds to wait for the replies to any message."""
        return self.config.message_timeout

    @property
    def recovery(self) -> RecoveryConfig:
        """The recovery relay's settings."""
        return self.config.recovery

    @property
    def relay_lr(self) -> float:
        """Learning rate of the relay's local training (the clients' by default)."""
        return self.config.recovery.lr or self.config.train.lr

    @property
    def local_epochs(self) -> int:
        """Local epochs of the federation's training (the GAN's in the GAN task)."""
        return (
            self.config.gan.epochs if self.config.task == "gan" else self.config.train.local_epochs
        )

    @property
    def local_lr(self) -> float:
        """Local learning rate of the federation's training (the GAN's in the GAN task)."""
        return self.config.gan.lr if self.config.task == "gan" else self.config.train.lr

    @property
    def retain_per_client(self) -> int:
        """Retained samples each client sends to methods that need a retained sample."""
        return self.config.methods.retain_per_client

    @property
    def unlearn_on_client(self) -> bool:
        """Whether each requesting client unlearns its own D_f (in a chain)."""
        return self.config.unlearn_on == "client"

    @property
    def generator_clients(self) -> int:
        """How many of a round's clients also train the federation's GAN (``generator`` need)."""
        return self.config.gan.generator_clients

    @property
    def fraction_train(self) -> float:
        """Share of the clients sampled for each FedAvg round."""
        return self.config.train.fraction_train

    @property
    def min_available_nodes(self) -> int:
        """Nodes to wait for before the first round: the whole federation."""
        return self.config.clients
