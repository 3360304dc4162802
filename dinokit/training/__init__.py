"""Training: the loop, optimiser and schedule, RNG, distributed helpers, progress output."""
