"""Training entry point for launchers: `python -m una_hpc.train CONFIG [key.sub=value ...]`.

    deepspeed --num_gpus 2 -m una_hpc.train configs/parallel/zero2.yaml

The deepspeed launcher appends `--local_rank=N`; the rank comes from the environment, so it is dropped here.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    try:
        code = main(["train", *argv])
    finally:
        from .parallel.distributed import close_distributed

        close_distributed()  # before interpreter exit tears gloo's threads down (see close_distributed)
    sys.exit(code)
