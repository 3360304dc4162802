"""dinokit: a command-line toolkit and ablation studio for DINO object detection."""

__version__ = "0.1.0"
