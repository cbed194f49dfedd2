"""LoRA adapters to and from PEFT's folder format (`adapter_config.json` +
`adapter_model.safetensors`), for transformers' GPT-2 models.

PEFT stores `lora_A.weight` [r, in] and `lora_B.weight` [out, r] for Conv1D (with
`fan_in_fan_out=True`, GPT-2's layers) and Linear (the classifier's `score`) alike; the update of
our [in, out] kernel is then A^T B^T, so ours are lora_a = A^T and lora_b = B^T. A module trained
whole (a classifier's `score`) is a `modules_to_save` entry holding its full weight.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import save_file

from gptjax.files import atomic_dir, write_json
from gptjax.model import lora
from gptjax.model.lora import LoRAConfig

PREFIX = "base_model.model."
_KEY = re.compile(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B)(?:\.default)?\.weight$")


def _hf_module(path: tuple[str, ...]) -> str:
    """("h_0", "attn", "c_attn") -> "transformer.h.0.attn.c_attn"; ("score",) -> "score"."""
    if path == ("score",):
        return "score"
    return "transformer." + ".".join(re.sub(r"^h_(\d+)$", r"h.\1", p) for p in path)


def _our_path(module: str) -> tuple[str, ...]:
    parts = module.removeprefix("transformer.").split(".")
    out, i = [], 0
    while i < len(parts):
        if parts[i] == "h" and i + 1 < len(parts) and parts[i + 1].isdigit():
            out.append(f"h_{parts[i + 1]}")
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return tuple(out)


def to_peft(lcfg: LoRAConfig, adapters: dict, out: str | Path, *, modules=None) -> Path:
    """Write `out/adapter_config.json` + `out/adapter_model.safetensors` for
    `peft.PeftModel.from_pretrained(<transformers GPT-2 model>, out)`. `modules` ({"score":
    {"kernel": [D, C]}}) are saved whole (`modules_to_save`), which makes the folder a
    sequence-classification adapter. Written under a temporary name, then renamed."""
    tensors = {}
    flat = traverse_util.flatten_dict(adapters)
    for path in lora.adapter_paths(adapters):
        ad = {name: flat[(*path, name)] for name in ("lora_a", "lora_b")}
        module = PREFIX + _hf_module(path)
        tensors[f"{module}.lora_A.weight"] = np.ascontiguousarray(np.asarray(ad["lora_a"]).T)
        tensors[f"{module}.lora_B.weight"] = np.ascontiguousarray(np.asarray(ad["lora_b"]).T)
    for name, value in (modules or {}).items():
        tensors[f"{PREFIX}{name}.weight"] = np.ascontiguousarray(np.asarray(value["kernel"]).T)
    config = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if modules else "CAUSAL_LM",
        "r": lcfg.rank,
        "lora_alpha": lcfg.alpha,
        "target_modules": list(lcfg.targets),
        "fan_in_fan_out": True,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_rslora": False,
        "modules_to_save": sorted(modules) if modules else None,
        "inference_mode": True,
        "base_model_name_or_path": None,
        "init_lora_weights": True,
    }
    out = Path(out).absolute()
    with atomic_dir(out) as tmp:
        write_json(tmp / "adapter_config.json", config)
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out


def from_peft(path: str | Path) -> tuple[LoRAConfig, dict]:
    """(lcfg, adapters) from a PEFT LoRA folder of a GPT-2 model (one written by peft itself
    too). Modules saved whole are read by `peft_modules`."""
    folder = Path(path)
    config = _config(folder)
    for key, allowed in (
        ("peft_type", ("LORA",)),
        ("use_rslora", (False, None)),
        ("use_dora", (False, None)),
    ):
        if config.get(key) not in allowed:
            raise ValueError(
                f"{folder / 'adapter_config.json'}: {key}={config.get(key)!r} is "
                f"not supported (expected {allowed[0]!r})"
            )
    targets = config.get("target_modules")
    if isinstance(targets, str):
        raise ValueError(
            f"{folder / 'adapter_config.json'}: target_modules as a regex "
            f"({targets!r}) is not supported; list module names"
        )
    lcfg = LoRAConfig(
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        targets=tuple(sorted(targets or ())),
    )
    pairs: dict[tuple[str, ...], dict] = {}
    for key, value in _tensors(folder).items():
        m = _KEY.match(key)
        if m:
            name = "lora_a" if m.group(2) == "lora_A" else "lora_b"
            pairs.setdefault(_our_path(m.group(1)), {})[name] = jnp.asarray(value.T, jnp.float32)
    for p, ad in pairs.items():
        if set(ad) != {"lora_a", "lora_b"}:
            raise ValueError(f"{folder}: {'.'.join(p)} has only {', '.join(ad)}")
    adapters = traverse_util.unflatten_dict(
        {(*p, k): v for p, ad in pairs.items() for k, v in ad.items()}
    )
    if not adapters:
        raise ValueError(f"{folder / 'adapter_model.safetensors'}: no LoRA weights")
    return lcfg, adapters


def peft_modules(path: str | Path) -> dict:
    """The modules a PEFT folder saves whole ({"score": {"kernel": [D, C]}}), if any."""
    folder = Path(path)
    saved = _config(folder).get("modules_to_save") or []
    out = {}
    for key, value in _tensors(folder).items():
        name = key.removeprefix(PREFIX).removesuffix(".weight").replace(".modules_to_save", "")
        if name.split(".")[0] in saved and "lora_" not in key and value.ndim == 2:
            out[name.split(".")[0]] = {"kernel": jnp.asarray(value.T, jnp.float32)}
    return out


def _config(folder: Path) -> dict:
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a PEFT adapter folder?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("r", "lora_alpha"):
        if key not in config:
            raise ValueError(f"{path}: missing field {key!r}")
    return config


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a PEFT adapter folder?)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise ValueError(f"{path}: unreadable safetensors file ({e})") from None
