"""Fine-tuning on the retained data, the federated way (the ``FT`` baseline).

Paper 004 (section "Baselines", item 4, after Golatkar, Achille and Soatto 2020): "We fine-tune
the Original using D_r with a large learning rate"; paper 002 (section 4.4) runs the same
baseline as "Catastrophic forgetting (finetuning)". Nothing on D_f is used: the forgotten data
is expected to fade because it is no longer trained on (catastrophic forgetting).

In a federation D_r stays on the clients, so the faithful form is a few more FedAvg rounds
(Eq. 1 of paper 000) from the current global model after the deleting clients dropped D_f:
every remaining client trains the global weights on its retained data
(:attr:`UnlearningContext.federated_train`) and the server averages them by sample count
(:func:`fedforget.federated.weighted_average`). Needs ``rounds`` only; no data reaches the
server.

Choices where the papers are vague:

- ``lr``: "a large learning rate" is read as ``lr_scale`` times the federation's local rate
  (``context.local_lr``); ``lr`` overrides it with an absolute value. Momentum and batch size
  are the clients' own. Default scale 2, measured on the MNIST harness (20 clients, LeNet-5,
  local lr 0.05, momentum 0.9, batch 50, deletion after round 7); D_f accuracy after 3 rounds:

  scale 1: backdoor 97.9 % (95.1 % after 6 rounds), class 3 90.1 % (87.7 % after 4);
  scale 1.5: backdoor 75.3 % (63.6 % after 5), class 3 83.7 % (77.4 % after 4);
  scale 2: backdoor 30.1 % (26.2 % after 6), class 3 59.8 % (49.2 % after 6);
  scale 3 and 4 diverge (backdoor mode: test accuracy ~10 % after one round).

  Clean accuracy stays at 98.7 % (backdoor mode) and 98.8 % on the other classes (class
  mode; whole test set 94.8 %, retrain 88.7 %, as 40 % of the 3s are no longer recognised).
  The largest stable rate forgets most, yet fine-tuning does *not* reach the
  retrained model (0.2 % backdoor success, 0 % on class 3): clean data never activates the
  trigger's pathway, and the class-3 unit decays slowly. Five local epochs per round (scale
  1) help little (class 3: 83.4 % instead of 90.1 % after 3 rounds, at 2.5 x the cost).
- ``rounds``: 3, "a few rounds" (~7 s each on the harness); the forgetting has mostly
  plateaued by then at scale 2 (backdoor 30 / 26 / 34 / 26 % after rounds 3-6).
- ``epochs``: local epochs per round, the federation's own (``context.local_epochs``).
- Stability: at scale 2 three seeds of the clients' batch order give 30.1, 44.0 and 34.8 %
  backdoor success after 3 rounds on MNIST, never divergence. On tiny data (sklearn digits,
  batch 16) scale 2 and even 1.5 sometimes diverge, depending on the batch order; scale 1 for
  8 rounds forgets there (class 0 %, backdoor 33-38 % from 96 %, clean accuracy up).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedforget.federated import weighted_average
from fedforget.models import ClassifierModel
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning.base import (
    State,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)


class FinetuneSettings(UnlearnerSettings):
    """Options of :class:`FinetuneUnlearner`.

    Attributes
    ----------
    rounds : int
        FedAvg rounds of fine-tuning on the remaining clients' retained data.
    epochs : int | None
        Local epochs per round; ``None`` = the federation's ``local_epochs``.
    lr : float | None
        Absolute local learning rate; ``None`` = ``lr_scale`` x the federation's ``local_lr``.
    lr_scale : float
        Factor on the federation's local learning rate when ``lr`` is not given.
    """

    rounds: int = Field(3, ge=1)
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    lr_scale: float = Field(2.0, gt=0)


@register_unlearner
class FinetuneUnlearner(Unlearner):
    """Fine-tune the global model with FedAvg rounds on the retained data only (FT)."""

    name = "finetune"
    needs = frozenset({"rounds"})
    Settings = FinetuneSettings
    settings: FinetuneSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Run ``rounds`` FedAvg rounds from ``model`` on the remaining clients."""
        train_on_clients = self.require_client_training(context)
        cfg = self.settings
        epochs = cfg.epochs or context.local_epochs
        lr = cfg.lr if cfg.lr is not None else cfg.lr_scale * context.local_lr
        state = state_to_numpy(model)
        for round_ in range(cfg.rounds):
            updates = train_on_clients(state, epochs, lr)
            new_state = weighted_average(updates)
            context.report(
                "fine-tuning",
                round_ + 1,
                cfg.rounds,
                shift=_distance(new_state, state),
                clients=float(len(updates)),
            )
            state = new_state
        return load_numpy_state(model, state).eval()


def _distance(a: State, b: State) -> float:
    """L2 distance between two states (the size of one round's global update)."""
    squares = (np.sum((a[k].astype(np.float64) - b[k]) ** 2) for k in a if a[k].dtype.kind == "f")
    return float(np.sqrt(sum(squares)))
