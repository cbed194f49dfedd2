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
from gptjax.model import abstract_params

CONFIG = "config.json"
PARAMS = "params"


def save_model(directory: str | Path, cfg: GPTConfig, params, *, extra_files=()) -> Path:
    """Write cfg and params (and copies of `extra_files`, e.g. tokenizer files) to `directory`."""
    directory = Path(directory).absolute()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        (tmp / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        # Bound what orbax holds in flight so a large model saves at about 1x its size.
        handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=1, use_compression=False)
        with ocp.Checkpointer(handler) as ckptr:
            ckptr.save(tmp / PARAMS, args=ocp.args.PyTreeSave(params))
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
    """(cfg, params) from a gptjax model directory, a training run directory (its latest
    checkpoint), a Hugging Face GPT-2 folder or an OpenAI GPT-2 folder."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    if (directory / "model.safetensors").is_file():
        from convert.hf import from_hf

        return from_hf(directory)
    if (directory / "checkpoints").is_dir():
        return _load_from_run(directory)
    if (directory / "hparams.json").is_file():
        from convert.openai import from_openai

        return from_openai(directory)
    if not is_model_dir(directory):
        raise ValueError(
            f"{directory}: not a gptjax checkpoint (expected {CONFIG} and {PARAMS}/), "
            "a training run (checkpoints/) nor a Hugging Face folder (model.safetensors)"
        )
    cfg = read_config(directory / CONFIG)
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(directory / PARAMS, abstract_params(cfg))
    return cfg, jax.tree.map(np.asarray, params)


def _load_from_run(directory: Path) -> tuple[GPTConfig, dict]:
    ckpts = RunCheckpoints(directory)
    step = ckpts.latest_step()
    if step is None:
        raise ValueError(f"{directory}/checkpoints: no complete checkpoint yet")
    cfg = GPTConfig.from_dict(ckpts.meta(step)["model"])
    params = ckpts.restore_params(step, abstract_params(cfg))
    ckpts.close()
    return cfg, jax.tree.map(np.asarray, params)


class RunCheckpoints:
    """Training checkpoints of a run: `OUT/checkpoints/<step>/{params,train,meta}` via orbax's
    CheckpointManager. `params` alone is what `load_model` reads; `train` holds the optimizer
    state, step and rng; `meta` the model config, run options and data position. Orbax writes
    each step under a temporary name and renames it when complete, so a kill mid-save leaves
    the previous step restorable; leftovers are cleaned on the next start.
    """

    def __init__(self, run_dir: str | Path, *, keep: int = 3):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, cleanup_tmp_directories=True, create=True
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("params", "train", "meta")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        train = {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                train=ocp.args.StandardSave(train),
                meta=ocp.args.JsonSave(meta),
            ),
        )

    def meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

    def restore(self, step: int, abstract_state):
        """The train state saved at `step`, laid out like `abstract_state` (shardings too)."""
        train = {
            "opt_state": abstract_state.opt_state,
            "step": abstract_state.step,
            "rng": abstract_state.rng,
        }
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state.params),
                train=ocp.args.StandardRestore(train),
            ),
        )
        t = out["train"]
        return type(abstract_state)(out["params"], t["opt_state"], t["step"], t["rng"])

    def restore_params(self, step: int, abstract_params):
        args = ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
        return self.manager.restore(step, args=args)["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
