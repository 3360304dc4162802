"""pytest settings for the test folder."""

# A script the DDP tests launch with torchrun, not a test module: collecting it (say, with
# `pytest tests/*.py`) would run its argument parsing against pytest's own arguments.
collect_ignore = ["ddp_worker.py"]
