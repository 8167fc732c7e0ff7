"""Runnable experiments that reproduce the numbers in docs/ (see experiments/README.md).

Each is a module run from the repository root, ``python -m experiments.<name> --help``; they
import from the ``fedforget`` package only (shared set-ups: :mod:`fedforget.testing`).
"""
