"""Pretrain the workbook's GPT on one process or many (DDP): the same code either way.

    python scripts/train_ddp.py --steps 20                                   # one process
    torchrun --standalone --nproc_per_node 2 scripts/train_ddp.py --steps 20 # two processes (gloo on a CPU)
    accelerate launch --num_processes 2 scripts/train_ddp.py --steps 20      # the same, through accelerate
    sbatch cluster/pretrain.slurm                                            # several GPU nodes with Slurm

Everything happens in course_utils.training.ddp.main; `--help` lists the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from course_utils.training.ddp import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
