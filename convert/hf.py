"""Hugging Face GPT-2 folders (`config.json` + `model.safetensors`) to and from our tree."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
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


def from_hf(path: str | Path, *, progress: bool = False) -> tuple[GPTConfig, dict]:
    """Read a Hugging Face GPT-2 folder; return (config, params) with float32 params.

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
        return cfg, assemble(cfg, tensors(), str(weights), progress)
    except Exception as e:
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"{weights}: unreadable safetensors file ({e})") from None


def to_hf(cfg: GPTConfig, params, out_dir: str | Path) -> Path:
    """Write `config.json` + `model.safetensors` that transformers' GPT2LMHeadModel loads.

    Written under a temporary name and renamed, so `out_dir` is never half-written. A model
    without qkv biases gets zero biases, which HF's GPT-2 always has.
    """
    import numpy as np
    from safetensors.numpy import save_file

    from convert.names import flatten
    from gptjax.checkpoint import replace_dir

    out_dir = Path(out_dir).absolute()
    flat = dict(flatten(params))
    tensors = {}
    for our, hf_name, _ in rows(dataclasses.replace(cfg, qkv_bias=True)):
        default = np.zeros(3 * cfg.emb_dim, np.float32) if our.endswith("c_attn/bias") else None
        value = flat.get(our, default)
        if value is None:
            raise ValueError(f"params: missing {our} for {cfg}")
        prefix = "" if hf_name == "lm_head.weight" else "transformer."
        tensors[prefix + hf_name] = np.ascontiguousarray(np.asarray(value, np.float32))
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length, "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads, "n_layer": cfg.n_layers, "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate, "attn_pdrop": cfg.drop_rate, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": 50256, "eos_token_id": 50256,
    }  # fmt: skip
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
