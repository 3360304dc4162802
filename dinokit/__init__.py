"""dinokit: a command-line toolkit and ablation studio for DINO object detection."""

from dinokit.version import __version__

__all__ = ["__version__"]
