"""The one model record: `Model` (config, params and what the model is for) with one `open` that
reads every folder gptjax knows and one `save` that writes gptjax's own.

    Model.open(path)   a gptjax model folder, a training run (its final model, else its newest
                       checkpoint), a Hugging Face GPT-2 folder (language model or classifier)
                       or an OpenAI GPT-2 folder
    model.save(dir)    config.json + params/ + checksums.json (+ classifier.json or task.json)

Every script opens models through here, so what a folder is, and what kind of model it holds,
is decided in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gptjax.config import GPTConfig
from gptjax.data import bpe, chat, tokenizer
from gptjax.model.classifier import GPTClassifier
from gptjax.model.params import init_params
from gptjax.store import own
from gptjax.store.hf import from_hf, hf_labels
from gptjax.store.openai import from_openai

KINDS = ("lm", "instruct", "classifier")
BPE = ("encoder.json", "vocab.bpe")  # the tokenizer files a converted model carries


@dataclass(frozen=True)
class Model:
    """A GPT-2 and what it is for. `head`: a classifier's labels, pad_id, pooling and max_length
    (its params hold `score` [D, C] instead of an LM head); `task`: what a language model was
    tuned for ({"kind": "instruct", "template": "alpaca"}); `folder`: where it was opened from;
    `tokenizer`: a tokenizer of its own (a tiktoken Encoding, saved with it; None: GPT-2's)."""

    cfg: GPTConfig
    params: Any
    head: dict | None = None
    task: dict | None = None
    folder: Path | None = None
    tokenizer: Any = None

    @property
    def kind(self) -> str:
        """lm, instruct (answers in its template) or classifier."""
        if self.head is not None:
            return "classifier"
        return "instruct" if (self.task or {}).get("kind") == "instruct" else "lm"

    @property
    def module(self) -> GPTClassifier | None:
        """A classifier's module (None for a language model, which is `GPT(cfg)`)."""
        if self.head is None:
            return None
        h = self.head
        return GPTClassifier(self.cfg, len(h["labels"]), h["pad_id"], h["pooling"])

    @classmethod
    def open(cls, path: str | Path) -> Model:
        """The model in any folder gptjax reads (see the module's docstring)."""
        path = Path(path).absolute()
        folder = path.parent if path.is_file() else path
        if own.is_model_dir(folder / "model"):  # a finished run stands for its final model
            folder = folder / "model"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such model folder")
        head = task = None
        if (folder / "model.safetensors").is_file():
            (cfg, params), head = from_hf(folder), hf_labels(folder)
            task = chat.TASK if hf_chat_template(folder) == chat.JINJA else None
        elif (folder / "hparams.json").is_file():
            cfg, params = from_openai(folder)
        elif own.is_model_dir(folder):
            cfg, params, head, task = own.read(folder)
        elif (folder / "checkpoints").is_dir():
            cfg, params = own.read_run(folder)
        else:
            raise ValueError(
                f"{folder}: not a gptjax model ({own.CONFIG} and {own.PARAMS}/), a training run "
                "(checkpoints/), a Hugging Face folder (model.safetensors) nor an OpenAI one "
                "(hparams.json)"
            )
        if head is not None:
            if "score" not in params:
                raise ValueError(f"{folder}: a classifier description but no score weights")
            head = {"pooling": "last-non-pad", "max_length": cfg.context_length, **head}
        return cls(cfg, params, head, task, folder, bpe.find(folder))

    @classmethod
    def preset(cls, name: str, *, seed: int = 0, **overrides) -> Model:
        """Random GPT-2 weights (GPT-2's init) of a preset size."""
        cfg = GPTConfig.preset(name, **overrides)
        return cls(cfg, init_params(cfg, jax.random.key(seed)))

    def save(self, directory: str | Path, *, extra_files=()) -> Path:
        """Write the model as a gptjax folder, whole or not at all, with its own tokenizer's
        files (or copies of `extra_files`, e.g. GPT-2's BPE files, beside it); -> the folder."""
        params = jax.tree.map(np.asarray, self.params)
        directory = Path(directory).absolute()
        context = self.cfg.context_length
        write = None
        if self.tokenizer is not None:
            write = lambda tmp: bpe.write_files(self.tokenizer, tmp, context=context)
        return own.write(
            directory,
            self.cfg,
            params,
            head=self.head,
            task=self.task,
            extra_files=extra_files,
            also=write,
        )

    def replace(self, **changes) -> Model:
        return dataclasses.replace(self, **changes)

    @property
    def carries_bpe(self) -> bool:
        """Whether its folder holds GPT-2's tokenizer files (a converted model's does)."""
        return self.folder is not None and all((self.folder / f).is_file() for f in BPE)

    def encoding(self):
        """The model's tokenizer: its own (trained with train.tokenizer, or grown with chat
        tokens), else GPT-2's BPE, from its folder when it carries the files, else from the
        cache; a vocabulary too small for it is refused."""
        source = str(self.folder or "the model")
        if self.tokenizer is not None:
            bpe.check_fits(self.tokenizer, self.cfg.vocab_size, source)
            return self.tokenizer
        tokenizer.check_vocab(self.cfg.vocab_size, source)
        return tokenizer.gpt2(self.folder if self.carries_bpe else None)

    def bpe_files(self) -> list[Path]:
        """The BPE files that travel with a converted model: its folder's, else the cache's."""
        return [self.folder / f for f in BPE] if self.carries_bpe else tokenizer.bpe_files()


def hf_chat_template(folder: Path) -> str | None:
    """The chat template a Hugging Face folder's tokenizer_config.json holds (an export of a
    ChatML model has gptjax's own, so it opens as the chat model it was)."""
    config = own.read_json(folder / bpe.HF_CONFIG, "a tokenizer config")
    return (config or {}).get("chat_template")


def open_or_preset(
    ckpt: str | None,
    preset: str,
    *,
    seed: int = 0,
    weights: bool = True,
    tokenizer_dir: str | None = None,
    **overrides,
) -> Model:
    """What a script runs on: the model at `ckpt`, else the `preset` (with `overrides`) and
    random weights drawn from `seed` (weights=False: params None, for a trainer that draws them
    itself); either way with a vocabulary that covers its tokenizer. `tokenizer_dir`: a
    tokenizer folder (train.tokenizer) a preset model is sized for and uses; a checkpoint must
    already use that one."""
    own_tok = bpe.load(tokenizer_dir) if tokenizer_dir else None
    if ckpt:
        model = Model.open(ckpt)
        if own_tok is not None:
            had = model.tokenizer or tokenizer.gpt2()
            if bpe.fingerprint(had) != bpe.fingerprint(own_tok):
                raise ValueError(
                    f"--tokenizer {tokenizer_dir}: {ckpt} was trained with another tokenizer "
                    f"({bpe.fingerprint(had)['name']}); leave --tokenizer out to use its own"
                )
    else:
        if own_tok is not None:
            overrides.setdefault("vocab_size", own_tok.n_vocab)
        if weights:
            model = Model.preset(preset, seed=seed, **overrides)
        else:
            model = Model(GPTConfig.preset(preset, **overrides), None)
        model = model.replace(tokenizer=own_tok)
    model.encoding()  # refuses a vocabulary its tokenizer does not fit
    return model
