"""The fedforget Flower ServerApp, wired from configuration."""
