"""NoT: unlearning by negating the weights of one layer, then recovering on the kept data.

Khalil et al., "NoT: Federated Unlearning via Weight Negation" (CVPR 2025). Negating a
layer's parameters, w_l <- -w_l, destroys what the network computes (the layers after it
receive the opposite of the features they were trained on: the co-adaptation between layers
is broken) while leaving every weight's magnitude, and the later layers, untouched. Training
then resumes on the retained data only; the network re-learns what the retained data
supports, quickly because the rest of its weights are still adapted, and has no data to
re-learn what was forgotten.

Equations (our reading; the paper text is not in this repository):

    w~_l = -w_l  (weight and bias of layer l),   w~_j = w_j  (j != l)

then ``rounds`` FedAvg rounds (Eq. 1 of paper 000) from w~ on the remaining clients' retained
data (the ``rounds`` need).

Choices where our reading leaves room:

- The layer: the *first* parameterised layer (LeNet-5's ``conv1``), where the paper (as we
  read it) negates: a negated first layer changes every feature downstream while the later
  layers keep their learned structure for the recovery. ``layer`` names another module.
- Its bias is negated too (``negate_bias``), so that the layer's pre-activation is exactly
  negated; BatchNorm running statistics are not parameters and stay.
- Recovery: ``rounds`` (5) FedAvg rounds at the federation's local epochs and learning rate
  times ``lr_scale`` (1). The paper also recovers by fine-tuning; here the retained data
  stays on the clients, so recovery is federated.
- Every mode: the forgetting comes from training without D_f after the negation, which holds
  for samples, classes and leaving clients alike. No D_f, history or retained sample is used.
"""

from __future__ import annotations

import torch
from pydantic import Field

from fedforget.config import ConfigError
from fedforget.federated import weighted_average
from fedforget.models import ClassifierModel
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning.base import (
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)


class NegationSettings(UnlearnerSettings):
    """Options of :class:`NegationUnlearner`.

    Attributes
    ----------
    layer : str | None
        Module whose parameters are negated; ``None`` = the first module with parameters.
    negate_bias : bool
        Negate the layer's bias as well as its weight.
    rounds : int
        FedAvg rounds of recovery on the remaining clients.
    lr_scale : float
        Factor on the federation's local learning rate during recovery.
    """

    layer: str | None = None
    negate_bias: bool = True
    rounds: int = Field(5, ge=1)
    lr_scale: float = Field(1.0, gt=0)


@register_unlearner
class NegationUnlearner(Unlearner):
    """Negate one layer's weights (NoT), then recover with FedAvg rounds on D_r."""

    name = "not"
    needs = frozenset({"rounds"})
    Settings = NegationSettings
    settings: NegationSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Negate the chosen layer, then run ``rounds`` FedAvg rounds on the clients."""
        train_on_clients = self.require_client_training(context)
        cfg = self.settings
        negated = negate_layer(model, cfg.layer, cfg.negate_bias)
        context.report("negation", 1, 1, parameters=float(len(negated)))
        state = state_to_numpy(model)
        lr = cfg.lr_scale * context.local_lr
        for round_ in range(cfg.rounds):
            state = weighted_average(train_on_clients(state, context.local_epochs, lr))
            context.report("recovery", round_ + 1, cfg.rounds)
        return load_numpy_state(model, state).eval()


def first_parameterised_layer(model: torch.nn.Module) -> str:
    """Name of the first module (in registration order) that holds parameters of its own."""
    for name, module in model.named_modules():
        if name and any(True for _ in module.parameters(recurse=False)):
            return name
    raise ValueError("the model has no parameterised layer to negate")


@torch.no_grad()
def negate_layer(model: torch.nn.Module, layer: str | None, negate_bias: bool = True) -> list[str]:
    """Negate the parameters of ``layer`` (default: the first) in place; return their names."""
    name = layer or first_parameterised_layer(model)
    modules = dict(model.named_modules())
    if name not in modules:
        raise ConfigError(f"not: the model has no layer {name!r}")
    negated = []
    for param_name, param in modules[name].named_parameters(recurse=False):
        if param_name == "bias" and not negate_bias:
            continue
        param.neg_()
        negated.append(f"{name}.{param_name}")
    if not negated:
        raise ValueError(f"not: layer {name!r} has no parameters to negate")
    return negated
