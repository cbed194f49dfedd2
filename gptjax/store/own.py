"""gptjax's own model folder: `config.json` (the GPTConfig), `params/` (orbax), `checksums.json`
(crc32c of each array, verified on load), and what the model is for: `classifier.json` (a
classifier's labels, pad id, pooling, max length; its params hold `score`) or `task.json` (what a
language model was tuned for, e.g. {"kind": "instruct", "template": "alpaca"}).

A folder is written under a temporary name and renamed into place, so it is either the old model
or the new one, never half of either. A training run's folder (`checkpoints/`) is read here too:
its newest checkpoint's params.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from gptjax.config import GPTConfig
from gptjax.errors import first_line
from gptjax.files import atomic_dir, write_json
from gptjax.model.params import abstract_params
from gptjax.store.checksum import checksums, verify
from gptjax.store.run import RunCheckpoints

CONFIG = "config.json"
PARAMS = "params"
CLASSIFIER = "classifier.json"
CHECKSUMS = "checksums.json"
TASK = "task.json"


def write(
    directory: Path,
    cfg: GPTConfig,
    params,
    *,
    head: dict | None = None,
    task: dict | None = None,
    extra_files=(),
    also=None,
) -> Path:
    """Write a model folder (and copies of `extra_files`, e.g. tokenizer files, and whatever
    `also(folder)` writes into it), whole."""
    with atomic_dir(directory) as tmp:
        write_json(tmp / CONFIG, cfg.to_dict())
        write_json(tmp / CHECKSUMS, checksums(params, PARAMS))
        for name, obj in ((CLASSIFIER, head), (TASK, task)):
            if obj is not None:
                write_json(tmp / name, obj)
        # Bound what orbax holds in flight so a large model saves at about 1x its size.
        handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=1, use_compression=False)
        with ocp.Checkpointer(handler) as ckptr:
            ckptr.save(tmp / PARAMS, args=ocp.args.PyTreeSave(params))
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
        if also is not None:
            also(tmp)
    return directory


def is_model_dir(directory: Path) -> bool:
    return (directory / CONFIG).is_file() and (directory / PARAMS).is_dir()


def read_json(path: Path, what: str, required: tuple[str, ...] = ()) -> dict | None:
    """A JSON object file (None when absent), or a one-line error naming it."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
        if not isinstance(obj, dict):
            raise TypeError("not an object")
        if missing := [key for key in required if key not in obj]:
            raise KeyError(missing[0])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not {what} ({type(e).__name__}: {e})") from None
    return obj


def read_head(directory: Path) -> dict | None:
    """A folder's classifier.json ({"labels", "pad_id", "pooling", ...}), or None."""
    head = read_json(directory / CLASSIFIER, "a classifier description", ("labels",))
    if head is not None and (not isinstance(head["labels"], list) or len(head["labels"]) < 2):
        raise ValueError(f"{directory / CLASSIFIER}: labels must be a list of at least two names")
    return head


def read(directory: Path) -> tuple[GPTConfig, dict, dict | None, dict | None]:
    """(cfg, params, classifier head or None, task or None) of a model folder; its arrays are
    checked against checksums.json."""
    try:
        cfg = GPTConfig.from_dict(read_json(directory / CONFIG, "a GPTConfig JSON object"))
    except TypeError as e:
        raise ValueError(f"{directory / CONFIG}: not a GPTConfig JSON object ({e})") from None
    head = read_head(directory)
    task = read_json(directory / TASK, "a task description")
    abstract = abstract_params(cfg)
    if head is not None:
        abstract = {k: v for k, v in abstract.items() if k != "lm_head"}
        D, C = cfg.emb_dim, len(head["labels"])
        abstract["score"] = {"kernel": jax.ShapeDtypeStruct((D, C), np.float32)}
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(directory / PARAMS, abstract)
    except Exception as e:  # tensorstore's errors for truncated or garbled files
        raise ValueError(f"{directory}: unreadable params ({first_line(e)})") from None
    sums = read_json(directory / CHECKSUMS, "a checksum list")
    if sums is not None:
        verify(params, PARAMS, sums, str(directory))
    return cfg, jax.tree.map(np.asarray, params), head, task


def read_run(directory: Path) -> tuple[GPTConfig, dict]:
    """(cfg, params) of a pretraining run's newest checkpoint."""
    ckpts = RunCheckpoints(directory)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise ValueError(f"{directory}/checkpoints: no complete checkpoint yet")
        meta = ckpts.meta(step)
        if "task" in meta:  # a finetuning run: its checkpoints hold more than a GPT's params
            raise ValueError(
                f"{directory}: this {meta['task']} run has not saved its final model "
                f"(in {directory}/model) yet; finish it with --resume"
            )
        cfg = GPTConfig.from_dict(meta["model"])
        params = ckpts.restore_params(step, abstract_params(cfg))
        verify(params, PARAMS, meta.get("checksums", {}), f"{ckpts.directory}/{step}")
    finally:
        ckpts.close()
    return cfg, jax.tree.map(np.asarray, params)
