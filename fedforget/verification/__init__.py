"""Verifying forgetting on a user's own machine: SPD-GAN unlearning degree (paper 003)."""
