"""Pretrain a GPT on text, on one CPU, one GPU, many GPUs or a TPU slice, with the same command.

    python -m train.pretrain --data the-verdict --preset tiny --out runs/verdict

shows a progress bar with loss and tokens/s; at each eval prints train/val loss and a greedy
sample from --prompt; writes OUT/metrics.jsonl (val_bpb: bits per byte, comparable across
tokenizers), OUT/loss.png and checkpoints in OUT/checkpoints (the same command continues an
interrupted run). Sample afterwards with `python -m train.generate --ckpt OUT`. With
`--tokenizer DIR` (python -m train.tokenizer) the model is sized for that tokenizer and the run
keeps a copy in OUT/tokenizer, which every later command (generate, serve, instruct, rl,
export-hf) uses.
"""

from __future__ import annotations

from gptjax.options import run_cli
from gptjax.tasks.pretrain import Options, Pretrain, corpus
from train.options import script_main

__all__ = ["Options", "Pretrain", "corpus", "main"]


def main(argv=None) -> None:
    script_main(Options, Pretrain, argv, __doc__, "train.pretrain")


if __name__ == "__main__":
    run_cli(main)
