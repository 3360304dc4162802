"""dinokit: DINO object detection from Python and the command line.

`load`, `train`, `Detector` and `Run` come from dinokit.api (which imports torch only when used);
`Detections` is imported on first use. Both keep `import dinokit` (and `dinokit --help`) quick.
"""

from typing import Any

# The training package shares its name with the `train` function: import it first, so that the
# function binding below is the one `dinokit.train` keeps (a package's attribute is set once, on
# its first import; `dinokit.train.trainer` stays reachable through imports).
import dinokit.train as _training_package  # noqa: F401  (a docstring only: cheap)
from dinokit.api import Detector, Run, load, train
from dinokit.version import __version__

__all__ = ["__version__", "load", "train", "Detector", "Detections", "Run"]


def __getattr__(name: str) -> Any:
    if name == "Detections":
        from dinokit.infer.detections import Detections

        return Detections
    raise AttributeError(f"module 'dinokit' has no attribute '{name}'")
