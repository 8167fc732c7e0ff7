"""Verifying forgetting on a user's own machine: Skyeye (paper 000) and SPD-GAN (paper 003).

Importing this package registers every verifier (:data:`VERIFIER_REGISTRY`).
"""

from fedforget.verification import skyeye, spd  # noqa: F401  (registration)
from fedforget.verification.base import (
    VERIFIER_REGISTRY,
    VerificationResult,
    VerificationTask,
    Verifier,
    build_verifier,
    client_task,
    verifier_names,
)

__all__ = [
    "VERIFIER_REGISTRY",
    "VerificationResult",
    "VerificationTask",
    "Verifier",
    "build_verifier",
    "client_task",
    "verifier_names",
]
