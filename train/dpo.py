"""Preference tuning with DPO (the book's chapter-7 bonus): nudge an instruction-tuned model
toward the chosen answers of preference pairs, against a frozen copy of itself.

    python -m train.dpo --init-from runs/instruct --data instruction-data-with-preference \\
        --out runs/dpo [--beta 0.1]

prints the reference log-probabilities being computed (once, before training), then at each
evaluation the train/val DPO loss, reward margin and preference accuracy (starting at loss
0.693 = log 2, margin 0); writes OUT/metrics.jsonl, OUT/loss.png, OUT/rewards.png,
checkpoints (rerun to continue) and the tuned model in OUT/model.
"""

from __future__ import annotations

from gptjax.options import run_cli
from gptjax.tasks.dpo import DPO, Options
from train.options import script_main

__all__ = ["DPO", "Options", "main"]


def main(argv=None) -> None:
    script_main(Options, DPO, argv, __doc__, "train.dpo")


if __name__ == "__main__":
    run_cli(main)
