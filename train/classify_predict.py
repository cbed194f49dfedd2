"""`python -m train.classify predict`: label and probability for each text, from a classifier.

    python -m train.classify predict --ckpt runs/spam "You won a prize! Call now" "See you at 6?"
    cat texts.txt | python -m train.classify predict --ckpt runs/spam

prints `label<TAB>probability<TAB>text` per text. --ckpt takes a classify run, its OUT/model, or
a Hugging Face GPT2ForSequenceClassification folder.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from convert.hf import hf_labels
from convert.load import load_model
from gptjax import textdata, tokenizer
from gptjax.checkpoint import read_classifier
from gptjax.classifier import GPTClassifier
from gptjax.options import argument, option, parse


@dataclass(frozen=True)
class Predict:
    texts: list = argument("texts to classify (default: lines on stdin)", nargs="*")  # noqa: RUF009
    ckpt: str = option("runs/default", "classify run, classifier model or HF classifier folder")
    batch_size: int = option(32, "texts per forward pass")


def load_classifier(path: str | Path) -> tuple[GPTClassifier, dict, dict]:
    """(module, params, head) of a saved classifier; head: labels, pad_id, pooling, max_length."""
    path = Path(path)
    if (path / "model").is_dir():  # a classify run: the classifier it saved at the end
        path = path / "model"
    cfg, params = load_model(path)
    head = read_classifier(path)
    if head is None and (path / "model.safetensors").is_file():
        head = hf_labels(path)
    if head is None or "score" not in params:
        raise ValueError(f"{path}: not a classifier (no classifier.json or score weights)")
    head = {"pooling": "last-non-pad", "max_length": cfg.context_length, **head}
    model = GPTClassifier(cfg, len(head["labels"]), head["pad_id"], head["pooling"])
    return model, params, head


def predict(argv) -> None:
    opts = parse(Predict, argv, description="label and probability for each text")
    texts = list(opts.texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("no texts: pass them as arguments or one per line on stdin")
    model, params, head = load_classifier(opts.ckpt)
    apply = jax.jit(lambda ids: jax.nn.softmax(model.apply({"params": params}, ids)))
    enc = tokenizer.gpt2()
    for start in range(0, len(texts), opts.batch_size):
        chunk = texts[start : start + opts.batch_size]
        ids = textdata.encode(chunk, enc, head["max_length"], head["pad_id"])
        # Pad the batch itself to a fixed size, so one compiled step serves every chunk.
        ids = np.pad(ids, ((0, opts.batch_size - len(chunk)), (0, 0)),
                     constant_values=head["pad_id"])  # fmt: skip
        probs = np.asarray(apply(ids))[: len(chunk)]
        for text, p in zip(chunk, probs, strict=True):
            print(f"{head['labels'][int(p.argmax())]}\t{p.max():.4f}\t{text}")
