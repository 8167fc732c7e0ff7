"""Simulation runner, presets and benchmarks."""
