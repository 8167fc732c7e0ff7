"""fedforget: federated unlearning on the real Flower engine.

The core (this package) knows nothing of Flower. The Flower layers live in the top-level
folders ``strategies/``, ``clients/``, ``server/`` and ``simulations/`` and are imported as
``fedforget.strategies`` and so on: an installed wheel maps them through setuptools'
``package-dir``; in a source checkout (``flwr run .`` puts the checkout on ``sys.path``) the
repository root is added to this package's search path below so that the same names resolve.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

_checkout_root = Path(__file__).resolve().parent.parent
if (_checkout_root / "strategies" / "__init__.py").is_file():
    __path__.append(str(_checkout_root))  # type: ignore[name-defined]
