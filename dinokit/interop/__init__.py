"""Official IDEA-Research/DINO checkpoints: the key table (keys.py), conversion (official.py) and
loading any checkpoint file, dinokit or official (load.py)."""
