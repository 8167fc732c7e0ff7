"""Reporting: run events, the summary schema, tables and plots."""

from fedforget.report.observer import RunObserver

__all__ = ["RunObserver"]
