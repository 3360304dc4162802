"""dinokit: DINO object detection from Python and the command line.

`load`, `train`, `Detector` and `Run` come from dinokit.api (which imports torch only when used);
`Detections` is imported on first use. Both keep `import dinokit` (and `dinokit --help`) quick.
"""

from typing import Any

from dinokit.api import Detector, Run, load, train
from dinokit.version import __version__

__all__ = ["__version__", "load", "train", "Detector", "Detections", "Run"]


def __getattr__(name: str) -> Any:
    if name == "Detections":
        from dinokit.infer.detections import Detections

        return Detections
    raise AttributeError(f"module 'dinokit' has no attribute '{name}'")
