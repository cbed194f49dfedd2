"""Convert GPT-2 weights between OpenAI, Hugging Face and gptjax checkpoints.

    python -m convert openai MODEL_DIR OUT      OpenAI folder -> gptjax checkpoint
    python -m convert hf PATH OUT               Hugging Face folder -> gptjax checkpoint
    python -m convert export-hf CKPT OUT        any of the above -> Hugging Face folder
    python -m convert download SIZE [--dir DIR] [--source openai|hf]
    python -m convert check MODEL_DIR           loss on The Verdict and a greedy sample

OUT is an orbax checkpoint (params + config.json, with the tokenizer files beside them) that
`python -m train.pretrain --init-from OUT` and `python -m train.generate --ckpt OUT` accept.
Each command prints what it wrote; `check` prints train/val loss and a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tyro.conf import Positional

from convert.check import check
from convert.fetch import download_model
from gptjax.data import chat
from gptjax.model.params import count_params
from gptjax.options import Command, dispatch, parse, run_cli
from gptjax.store import Model
from gptjax.store.hf import from_hf, to_hf
from gptjax.store.openai import from_openai


@dataclass(frozen=True)
class Convert:
    """`openai`, `hf` and `export-hf`: read SOURCE, write OUT."""

    source: Positional[str]
    """the folder to read (see the command's description)"""
    out: Positional[str]
    """the folder to write"""


@dataclass(frozen=True)
class Download:
    size: Positional[str]
    """the GPT-2 size: 124M, 355M, 774M or 1558M"""
    dir: str | None = None
    """destination folder (unset: the cache's models/)"""
    source: Literal["openai", "hf"] = "openai"
    """where from"""
    mirror: str | None = None
    """base URL to try instead of the default mirrors"""


@dataclass(frozen=True)
class Check:
    model_dir: Positional[str]
    """any checkpoint `gptjax generate --ckpt` accepts"""
    context_length: int = 256
    """tokens per window (the book uses 256)"""


def convert_from(name: str):
    def run(argv) -> None:
        opts = parse(Convert, argv, COMMANDS[name].help)
        source = Path(opts.source)
        cfg, params = (from_openai if name == "openai" else from_hf)(source, progress=True)
        model = Model(cfg, params, folder=source if source.is_dir() else source.parent)
        out = model.save(opts.out, extra_files=model.bpe_files())
        print(f"wrote {out}: {count_params(params):,} parameters, {cfg}")

    return run


def export_hf(argv) -> None:
    opts = parse(Convert, argv, COMMANDS["export-hf"].help)
    model = Model.open(opts.source)
    head = model.head or {}  # a classifier keeps its labels
    labels = {k: head[k] for k in ("labels", "pad_id") if k in head}
    jinja = chat.JINJA if chat.template_of(model.task) == "chatml" else None
    out = to_hf(
        model.cfg,
        model.params,
        opts.out,
        tokenizer=model.tokenizer,
        chat_template=jinja,
        **labels,
    )
    print(f"wrote {out}")


def download(argv) -> None:
    opts = parse(Download, argv, COMMANDS["download"].help)
    mirrors = (opts.mirror,) if opts.mirror else None
    print(f"downloaded {download_model(opts.size, opts.dir, source=opts.source, mirrors=mirrors)}")


def check_model(argv) -> None:
    opts = parse(Check, argv, COMMANDS["check"].help)
    check(opts.model_dir, opts.context_length)


COMMANDS = {
    "openai": Command(
        "OpenAI GPT-2 folder (hparams.json, checkpoint, model.ckpt.*) -> gptjax checkpoint",
        convert_from("openai"),
    ),
    "hf": Command(
        "Hugging Face GPT-2 folder (config.json, model.safetensors) -> gptjax checkpoint",
        convert_from("hf"),
    ),
    "export-hf": Command(
        "gptjax checkpoint, training run, OpenAI or HF folder -> Hugging Face folder",
        export_hf,
    ),
    "download": Command("download OpenAI's GPT-2 weights (124M, 355M, 774M, 1558M)", download),
    "check": Command("loss on The Verdict (90/10 split) and a greedy sample", check_model),
}


def main(argv=None) -> None:
    dispatch(COMMANDS, argv, __doc__)


if __name__ == "__main__":
    run_cli(main)
