"""Open any GPT-2 folder: gptjax model or run, Hugging Face (LM or classifier), OpenAI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from convert.hf import from_hf, hf_labels
from convert.openai import from_openai
from gptjax.config import GPTConfig
from gptjax.model.classifier import GPTClassifier
from gptjax.training import checkpoint


def load_model(directory: str | Path) -> tuple[GPTConfig, dict]:
    """(cfg, params) from a gptjax model directory, a training run directory (its latest
    checkpoint), a Hugging Face GPT-2 folder or an OpenAI GPT-2 folder."""
    directory = Path(directory).absolute()
    if (directory / "model.safetensors").is_file():
        return from_hf(directory)
    if (directory / "hparams.json").is_file():
        return from_openai(directory)
    return checkpoint.read_model(directory)


def load_classifier(path: str | Path) -> tuple[GPTClassifier, dict, dict]:
    """(module, params, head) of a saved classifier; head: labels, pad_id, pooling, max_length."""
    path = checkpoint.model_dir(path)
    cfg, params = load_model(path)
    head = classifier_head(path)
    if head is None or "score" not in params:
        raise ValueError(f"{path}: not a classifier (no classifier.json or score weights)")
    head = {"pooling": "last-non-pad", "max_length": cfg.context_length, **head}
    model = GPTClassifier(cfg, len(head["labels"]), head["pad_id"], head["pooling"])
    return model, params, head


KINDS = ("lm", "instruct", "classifier")


@dataclass(frozen=True)
class Opened:
    """A checkpoint and what it was trained for: `kind` is one of KINDS; `head` (a
    classifier's labels, pad_id, pooling, max_length) and `module` only for classifiers."""

    kind: str
    cfg: GPTConfig
    params: dict
    head: dict | None = None
    module: GPTClassifier | None = None


def open_model(path: str | Path) -> Opened:
    """Load any folder `load_model` reads, with its kind read from the checkpoint itself:
    classifier.json or a HF classifier config -> classifier; task.json of kind instruct (written
    by `train.instruct` and `train.dpo`) -> instruct; else a plain language model."""
    folder = checkpoint.model_dir(path)
    if folder.is_dir() and classifier_head(folder) is not None:
        module, params, head = load_classifier(folder)
        return Opened("classifier", module.cfg, params, head, module)
    cfg, params = load_model(folder)
    task = folder / checkpoint.TASK
    kind = "lm"
    if task.is_file():
        try:
            kind = "instruct" if json.loads(task.read_text()).get("kind") == "instruct" else kind
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{task}: not a task description ({e})") from None
    return Opened(kind, cfg, params)


def classifier_head(folder: Path) -> dict | None:
    """A folder's classifier description (gptjax classifier.json or HF labels), or None."""
    head = checkpoint.read_classifier(folder)
    if head is None and (folder / "model.safetensors").is_file():
        head = hf_labels(folder)
    return head
