"""Hugging Face GPT-2 folders (`config.json` + `model.safetensors`) to and from our tree."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors import safe_open

from convert.names import assemble, rows
from gptjax.config import GPTConfig

# Causal-mask buffers that older transformers versions saved beside the weights.
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")


def _folder(path: str | Path) -> Path:
    path = Path(path)
    folder = path.parent if path.is_file() else path
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing (not a Hugging Face GPT-2 folder?)")
    return folder


def config_from_hf(hf: dict, source: str) -> GPTConfig:
    """Our GPTConfig from a Hugging Face GPT2Config dict."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{source}: activation_function {act!r} is not GPT-2's tanh GELU")
    if abs(hf.get("layer_norm_epsilon", 1e-5) - 1e-5) > 1e-12:
        raise ValueError(f"{source}: layer_norm_epsilon must be 1e-5 for GPT-2")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf["n_positions"],
            emb_dim=hf["n_embd"],
            n_heads=hf["n_head"],
            n_layers=hf["n_layer"],
            drop_rate=hf.get("resid_pdrop", 0.1),
            qkv_bias=True,
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    except KeyError as e:
        raise ValueError(f"{source}: missing field {e.args[0]}") from None


def from_hf(path: str | Path) -> tuple[GPTConfig, dict]:
    """Read a Hugging Face GPT-2 folder; return (config, params) with params as numpy float32.

    Tensor names may carry the `transformer.` prefix or not; causal-mask buffers are ignored.
    Tensors are read one at a time, so peak memory stays near the size of the weights.
    """
    folder = _folder(path)
    cfg_file = folder / "config.json"
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file}: not valid JSON ({e})") from None
    cfg = config_from_hf(hf, str(cfg_file))
    ours = {hf_name: our for our, hf_name, _ in rows(cfg)}
    weights = folder / "model.safetensors"

    def tensors():
        with safe_open(str(weights), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                name = key.removeprefix("transformer.")
                if _BUFFER.match(name) or (name == "lm_head.weight" and cfg.tie_embeddings):
                    continue
                yield ours.get(name, name), f.get_tensor(key)

    try:
        return cfg, assemble(cfg, tensors(), str(weights))
    except Exception as e:
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None
