"""`python -m train.classify predict`: label and probability for each text, from a classifier.

    python -m train.classify predict --ckpt runs/spam "You won a prize! Call now" "See you at 6?"
    cat texts.txt | python -m train.classify predict --ckpt runs/spam

prints `label<TAB>probability<TAB>text` per text. --ckpt takes a classify run, its OUT/model, or
a Hugging Face GPT2ForSequenceClassification folder.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from tyro.conf import Positional

from gptjax.model.classifier import Predictor
from gptjax.options import parse
from gptjax.store import Model


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
