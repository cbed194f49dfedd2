"""`python -m train.classify predict`: label and probability for each text, from a classifier.

    python -m train.classify predict --ckpt runs/spam "You won a prize! Call now" "See you at 6?"
    cat texts.txt | python -m train.classify predict --ckpt runs/spam

prints `label<TAB>probability<TAB>text` per text. --ckpt takes a classify run, its OUT/model, or
a Hugging Face GPT2ForSequenceClassification folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from convert.load import load_classifier
from gptjax import tokenizer
from gptjax.classifier import Predictor
from gptjax.options import argument, option, parse


@dataclass(frozen=True)
class Predict:
    texts: list = argument("texts to classify (default: lines on stdin)", nargs="*")  # noqa: RUF009
    ckpt: str = option("runs/default", "classify run, classifier model or HF classifier folder")
    batch_size: int = option(32, "texts per forward pass")


def predict(argv) -> None:
    opts = parse(Predict, argv, description="label and probability for each text")
    texts = list(opts.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("no texts: pass them as arguments or one per line on stdin")
    model, params, head = load_classifier(opts.ckpt)
    enc = tokenizer.gpt2()
    probs = Predictor(model, params, head, opts.batch_size)([enc.encode_ordinary(t) for t in texts])
    for text, p in zip(texts, probs, strict=True):
        print(f"{head['labels'][int(p.argmax())]}\t{p.max():.4f}\t{text}")
