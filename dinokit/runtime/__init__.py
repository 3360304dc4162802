"""The process around a run: device choice, allocator tuning, run folders."""
