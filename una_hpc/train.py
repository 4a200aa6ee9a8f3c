"""Training entry point for launchers: `python -m una_hpc.train CONFIG [key.sub=value ...]`.

    deepspeed --num_gpus 2 -m una_hpc.train configs/parallel/zero2.yaml

The deepspeed launcher appends `--local_rank=N`; the rank comes from the environment, so it is dropped here.
"""

from __future__ import annotations

import os
import sys

from .cli import main

if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    code = 1  # an exception below: no barrier, peers may be stuck in a collective
    try:
        code = main(["train", *argv])
    finally:
        from .parallel.distributed import close_distributed

        close_distributed(barrier=code == 0)
    # Every file is written and closed by now (metrics, checkpoints, final export). os._exit skips the interpreter's
    # teardown, where C++ destructors of torch.distributed's threads aborted finished runs (see close_distributed).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
