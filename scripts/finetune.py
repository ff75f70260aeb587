"""Fine-tune a model with LoRA/QLoRA on the workbook's instruction data: one process, or many with DDP.

    python scripts/finetune.py --profile tiny --max-steps 20
    accelerate launch --multi_gpu --num_processes 2 scripts/finetune.py --profile tiny --max-steps 4  # CPU: gloo
    accelerate launch --config_file cluster/accelerate_ddp.yaml scripts/finetune.py --profile cluster
    sbatch cluster/finetune.slurm

The work is done by course_utils.finetuning.finetune_launch.main (the same PEFT + TRL calls as Notebook 06, or Unsloth's on a
CUDA GPU); rank 0 writes the adapter and report.json into --output-dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from course_utils.finetuning.finetune_launch import main  # noqa: E402

if __name__ == "__main__":
    main()
