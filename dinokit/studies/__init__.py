"""What `ablate` and `tune` share: the study storage, the worker processes, the trainer factory,
the study names, and the launchers (local processes; Slurm through submitit)."""
