"""Finetune GPT-2 into a text classifier (the book's chapter 6 and appendix E).

    python -m train.classify --init-from runs/gpt2-124M --data sms-spam --out runs/spam
    python -m train.classify --preset tiny --trainable all --out runs/spam-tiny
    python -m train.classify predict --ckpt runs/spam "You won a prize! Call now"

Training prints the trainable parameter count, a progress bar, train/val loss and accuracy at
each evaluation, and at the end the accuracy on the full train, validation and test splits. It
writes OUT/metrics.jsonl, OUT/loss.png, OUT/accuracy.png, checkpoints (rerun to continue),
OUT/results.json and the classifier in OUT/model (LoRA merged; the adapters also in PEFT's
format in OUT/peft). `predict` prints label, probability and text for each text (or stdin line).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from tyro.conf import Positional

from gptjax.model.classifier import Predictor
from gptjax.options import parse, run_cli
from gptjax.store import Model
from gptjax.tasks.classify import Classify, Options
from train.options import script_main

__all__ = ["Classify", "Options", "main", "predict"]


@dataclass(frozen=True)
class Predict:
    texts: Positional[list[str]] = dataclasses.field(default_factory=list)
    """texts to classify (unset: lines on stdin)"""
    ckpt: str = "runs/default"
    """classify run, classifier model or HF classifier folder"""
    batch_size: int = 32
    """texts per forward pass"""


def predict(argv) -> None:
    opts = parse(Predict, argv, "label and probability for each text")
    texts = list(opts.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("no texts: pass them as arguments or one per line on stdin")
    model = Model.open(opts.ckpt)
    if model.kind != "classifier":
        raise ValueError(f"{opts.ckpt}: not a classifier (no classifier.json or score weights)")
    enc, head = model.encoding(), model.head
    predictor = Predictor(model.module, model.params, head, opts.batch_size)
    probs = predictor([enc.encode_ordinary(t) for t in texts])
    for text, p in zip(texts, probs, strict=True):
        print(f"{head['labels'][int(p.argmax())]}\t{p.max():.4f}\t{text}")


def main(argv=None) -> None:
    script_main(Options, Classify, argv, __doc__, "train.classify", {"predict": predict})


if __name__ == "__main__":
    run_cli(main)
