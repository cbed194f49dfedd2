"""Model checkpoints on disk: `DIR/config.json` (the GPTConfig) and `DIR/params` (orbax).

A directory is written under a temporary name and renamed into place, so DIR is either the old
checkpoint or the new one, never half of either.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from gptjax.config import GPTConfig

CONFIG = "config.json"
PARAMS = "params"


def save_model(directory: str | Path, cfg: GPTConfig, params, *, extra_files=()) -> Path:
    """Write cfg and params (and copies of `extra_files`, e.g. tokenizer files) to `directory`."""
    directory = Path(directory).absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / PARAMS, params)
            ckptr.wait_until_finished()
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
        replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def replace_dir(new: Path, final: Path) -> None:
    """Move `new` to `final`; an existing `final` is swapped out, then removed."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(final)


def is_model_dir(directory: Path) -> bool:
    return (directory / CONFIG).is_file() and (directory / PARAMS).is_dir()


def read_config(path: Path) -> GPTConfig:
    try:
        return GPTConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a GPTConfig JSON object ({e})") from None


def load_model(directory: str | Path) -> tuple[GPTConfig, dict]:
    """(cfg, params) from a gptjax model directory or a Hugging Face GPT-2 folder."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    if (directory / "model.safetensors").is_file():
        from convert.hf import from_hf

        return from_hf(directory)
    if not is_model_dir(directory):
        raise ValueError(
            f"{directory}: not a gptjax checkpoint (expected {CONFIG} and {PARAMS}/) "
            "nor a Hugging Face folder (model.safetensors)"
        )
    cfg = read_config(directory / CONFIG)
    from gptjax.model import init_params

    target = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(directory / PARAMS, target)
    return cfg, jax.tree.map(np.asarray, params)
