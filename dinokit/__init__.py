"""dinokit: DINO object detection from Python and the command line.

`dinokit.load`, `dinokit.train`, `Detector`, `Detections` and `Run` live in dinokit.api and are
imported on first use, so that `import dinokit` (and `dinokit --help`) stays quick.
"""

from typing import Any

from dinokit.version import __version__

__all__ = ["__version__", "load", "train", "Detector", "Detections", "Run"]
_API = {"load", "train", "Detector", "Run", "train_config"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from dinokit import api

        return getattr(api, name)
    if name == "Detections":
        from dinokit.infer.detections import Detections

        return Detections
    raise AttributeError(f"module 'dinokit' has no attribute '{name}'")
