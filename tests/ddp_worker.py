"""Run `dinokit ARGS...` (under torchrun) and also save each rank's final weights to DIR/rank<N>.pt.

Usage: python tests/ddp_worker.py DIR train ... ; only the test of DDP equivalence uses it: the
trainer writes files from rank 0 alone, and the test must see that every rank holds the same model.
"""

import sys
from pathlib import Path

import torch

from dinokit.cli import main
from dinokit.training import trainer

_original_result = trainer.Trainer._result


def _result_and_dump(self, interrupted):
    torch.save(self.raw_model.state_dict(), Path(sys.argv[1]) / f"rank{self.info.rank}.pt")
    return _original_result(self, interrupted)


trainer.Trainer._result = _result_and_dump

if __name__ == "__main__":
    main(sys.argv[2:])
