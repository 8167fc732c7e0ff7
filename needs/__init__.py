"""Data needs: what an unlearner needs from the clients, met the federated way.

Each need is one module holding the server's gathering step, the client's handlers and the
figures it records (:mod:`fedforget.needs.base`). They register in the order below, which is
the order in which a deletion step gathers them.
"""

from fedforget.needs.base import (
    NEEDS,
    ClientView,
    ClientWork,
    Gathered,
    GatherStep,
    Need,
    ServerParts,
    need_names,
    ordered,
    register_need,
)
from fedforget.needs.client_state import AuxiliaryNeed, ClientStateNeed, SyntheticNeed
from fedforget.needs.forget import ForgetNeed
from fedforget.needs.generator import GeneratorNeed
from fedforget.needs.history import HistoryNeed
from fedforget.needs.retain import RetainNeed
from fedforget.needs.rounds import RoundsNeed

__all__ = [
    "NEEDS",
    "AuxiliaryNeed",
    "ClientStateNeed",
    "ClientView",
    "ClientWork",
    "ForgetNeed",
    "GatherStep",
    "Gathered",
    "GeneratorNeed",
    "HistoryNeed",
    "Need",
    "RetainNeed",
    "RoundsNeed",
    "ServerParts",
    "SyntheticNeed",
    "need_names",
    "ordered",
    "register_need",
]
