"""Convert GPT-2 weights between OpenAI, Hugging Face and gptjax checkpoints.

    python -m convert openai MODEL_DIR OUT      OpenAI folder -> gptjax checkpoint
    python -m convert hf PATH OUT               Hugging Face folder -> gptjax checkpoint
    python -m convert export-hf CKPT OUT        any of the above -> Hugging Face folder
    python -m convert download SIZE [--dir DIR] [--source openai|hf]
    python -m convert check MODEL_DIR           loss on The Verdict and a greedy sample

OUT is an orbax checkpoint (params + config.json, with the tokenizer files beside them) that
`python -m train.pretrain --init-from OUT` and `python -m gptjax.generate --ckpt OUT` accept.
Each command prints what it wrote; `check` prints train/val loss and a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convert.check import check
from convert.fetch import SIZES, download_model
from convert.hf import from_hf, to_hf
from convert.load import load_model
from convert.openai import from_openai
from gptjax.cache import fetch
from gptjax.checkpoint import read_classifier, save_model
from gptjax.model import count_params
from gptjax.options import argument, option, parse_command, run_cli


@dataclass(frozen=True)
class Convert:
    """`openai`, `hf` and `export-hf`: read SOURCE, write OUT."""

    source: str = argument("the folder to read (see the command's description)")
    out: str = argument("the folder to write")


@dataclass(frozen=True)
class Download:
    size: str = argument(f"one of {', '.join(SIZES)}")
    dir: str | None = option(None, "destination folder (default: the cache's models/)")
    source: str = option("openai", "where from", choices=["openai", "hf"])
    mirror: str | None = option(None, "base URL to try instead of the default mirrors")


@dataclass(frozen=True)
class Check:
    model_dir: str = argument("any checkpoint `gptjax.generate --ckpt` accepts")
    context_length: int = option(256, "tokens per window (the book uses 256)")


COMMANDS = {
    "openai": (
        Convert,
        "OpenAI GPT-2 folder (hparams.json, checkpoint, model.ckpt.*) -> gptjax checkpoint",
    ),
    "hf": (
        Convert,
        "Hugging Face GPT-2 folder (config.json, model.safetensors) -> gptjax checkpoint",
    ),
    "export-hf": (
        Convert,
        "gptjax checkpoint, training run, OpenAI or HF folder -> "
        "Hugging Face folder (config.json, model.safetensors)",
    ),
    "download": (Download, "download GPT-2 weights"),
    "check": (Check, "loss on The Verdict (90/10 split) and a greedy sample"),
}


def tokenizer_files(model_dir: Path) -> list[Path]:
    """The BPE files that travel with a converted checkpoint: the folder's, else the cache's."""
    here = [model_dir / "encoder.json", model_dir / "vocab.bpe"]
    if all(p.is_file() for p in here):
        return here
    return [fetch("gpt2-bpe/encoder.json"), fetch("gpt2-bpe/vocab.bpe")]


def main(argv=None) -> None:
    name, opts = parse_command(COMMANDS, argv, description=__doc__.split("\n\n")[0])
    if name in ("openai", "hf"):
        source = Path(opts.source)
        cfg, params = (from_openai if name == "openai" else from_hf)(source, progress=True)
        folder = source if source.is_dir() else source.parent
        out = save_model(opts.out, cfg, params, extra_files=tokenizer_files(folder))
        print(f"wrote {out}: {count_params(params):,} parameters, {cfg}")
    elif name == "export-hf":
        cfg, params = load_model(opts.source)
        head = read_classifier(opts.source) or {}  # a classifier keeps its label names
        labels = {k: head[k] for k in ("labels", "pad_id") if k in head}
        print(f"wrote {to_hf(cfg, params, opts.out, **labels)}")
    elif name == "download":
        mirrors = (opts.mirror,) if opts.mirror else None
        print(
            f"downloaded {download_model(opts.size, opts.dir, source=opts.source, mirrors=mirrors)}"
        )
    else:
        check(opts.model_dir, opts.context_length)


if __name__ == "__main__":
    run_cli(main)
