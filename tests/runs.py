"""Pretraining runs for the tests: the nano preset on The Verdict, a few steps, in this process
(`pretrain`) or, where the process itself is tested, in one of its own (`pretrain_cmd`)."""

from __future__ import annotations

import json

from tests.cli import module_cmd, run

FAST = [
    *("--preset", "nano", "--context-length", "16", "--batch-size", "2", "--lr", "1e-3"),
    *("--eval-batches", "1", "--sample-tokens", "4", "--no-progress"),
]
# The reference run (conftest's `reference_run`): 24 steps, checkpoints at 8, 16 and 24. A
# constant learning rate after warmup, so a run started with a larger --max-steps and stopped
# early continues exactly like one started with 24.
REFERENCE = ["--max-steps", "24", "--ckpt-every", "8", "--eval-every", "6", "--min-lr-ratio", "1"]
REFERENCE += ["--warmup-steps", "4"]


# The modern recipe at the FAST size: every switch that pretraining takes, and Muon.
MODERN = [
    *("--position", "rotary", "--norm", "rmsnorm", "--qk-norm", "--activation", "relu2"),
    *("--logit-softcap", "15", "--window", "8", "--no-qkv-bias", "--no-tie-embeddings"),
    *("--init", "zero-proj", "--optimizer", "muon", "--doc-mask", "--align-docs"),
]


def pretrain(out, *args):
    """`python -m train.pretrain --out OUT` with the FAST options and `args`, in this process."""
    return run("train.pretrain", "--out", out, *FAST, *args)


def pretrain_cmd(out, *args) -> list[str]:
    """The same command line, for a process of its own."""
    return module_cmd("train.pretrain", "--out", out, *FAST, *args)


def losses(out) -> list[tuple]:
    """(step, train loss, val loss or None) of every record of OUT/metrics.jsonl."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["train_loss"], r.get("val_loss")) for r in map(json.loads, lines)]
