"""OpenAI GPT-2 model folders (TensorFlow checkpoints) into our parameter tree, with numpy only.

A folder holds `checkpoint`, `hparams.json` (n_vocab, n_ctx, n_embd, n_head, n_layer),
`model.ckpt.index`, `model.ckpt.data-00000-of-00001`, `encoder.json` and `vocab.bpe`
(`model.ckpt.meta` is never needed). Tensors are read one at a time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gptjax.config import GPTConfig
from gptjax.store.names import assemble, rows
from gptjax.store.tf_bundle import TensorBundle

HPARAMS = {
    "n_vocab": "vocab_size",
    "n_ctx": "context_length",
    "n_embd": "emb_dim",
    "n_head": "n_heads",
    "n_layer": "n_layers",
}


def read_hparams(path: Path) -> GPTConfig:
    try:
        hp = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in HPARAMS if k not in hp]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    try:
        return GPTConfig(**{ours: hp[theirs] for theirs, ours in HPARAMS.items()})
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def checkpoint_prefix(model_dir: Path) -> Path:
    """The checkpoint's path prefix, from the `checkpoint` file (relative to the folder)."""
    ckpt = model_dir / "checkpoint"
    match = re.search(r'model_checkpoint_path:\s*"([^"]+)"', ckpt.read_text())
    if not match:
        raise ValueError(f"{ckpt}: no model_checkpoint_path line")
    return model_dir / Path(match.group(1)).name


def from_openai(model_dir: str | Path, *, progress: bool = False) -> tuple[GPTConfig, dict]:
    """Read an OpenAI GPT-2 folder; return (config, params) with float32 params."""
    model_dir = Path(model_dir)
    for name in ("hparams.json", "checkpoint"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name}: missing (not an OpenAI GPT-2 folder?)")
    cfg = read_hparams(model_dir / "hparams.json")
    bundle = TensorBundle(checkpoint_prefix(model_dir))
    ours = {openai: our for our, _, openai in rows(cfg) if openai}

    def tensors():
        for name in bundle.entries:
            array = bundle.read(name)
            if name.endswith("/w") and array.ndim == 3 and array.shape[0] == 1:
                array = array[0]  # conv1d kernels are [1, in, out]
            yield ours.get(name, name), array

    source = f"{bundle.index_file} (against {model_dir / 'hparams.json'})"
    return cfg, assemble(cfg, tensors(), source, progress)
