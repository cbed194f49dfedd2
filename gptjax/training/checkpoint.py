"""Model checkpoints on disk: `DIR/config.json` (the GPTConfig), `DIR/params` (orbax) and
`DIR/checksums.json` (crc32c of each array, verified on load); a classifier also has
`DIR/classifier.json` (labels, pad id, pooling) and `score` in its params.

A directory is written under a temporary name and renamed into place, so DIR is either the old
checkpoint or the new one, never half of either. Folders of other formats (Hugging Face, OpenAI)
are opened by `convert.load_model`, one layer up.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from gptjax.config import GPTConfig
from gptjax.files import atomic_dir
from gptjax.model.gpt import abstract_params
from gptjax.training.checksum import checksums, verify
from gptjax.training.damage import reading

CONFIG = "config.json"
PARAMS = "params"
CLASSIFIER = "classifier.json"
CHECKSUMS = "checksums.json"
TASK = "task.json"


def save_model(
    directory: str | Path,
    cfg: GPTConfig,
    params,
    *,
    extra_files=(),
    classifier: dict | None = None,
    task: dict | None = None,
) -> Path:
    """Write cfg and params (and copies of `extra_files`, e.g. tokenizer files) to `directory`;
    `classifier` ({"labels", "pad_id", "pooling"}) marks a GPTClassifier's params, `task`
    (e.g. {"kind": "instruct", "template": "alpaca"}) what a language model was tuned for."""
    directory = Path(directory).absolute()
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        sums = checksums(params, PARAMS)
        (tmp / CHECKSUMS).write_text(json.dumps(sums, indent=1) + "\n")
        if classifier is not None:
            (tmp / CLASSIFIER).write_text(json.dumps(classifier, indent=2) + "\n")
        if task is not None:
            (tmp / TASK).write_text(json.dumps(task, indent=2) + "\n")
        # Bound what orbax holds in flight so a large model saves at about 1x its size.
        handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=1, use_compression=False)
        with ocp.Checkpointer(handler) as ckptr:
            ckptr.save(tmp / PARAMS, args=ocp.args.PyTreeSave(params))
        for f in extra_files:
            shutil.copy2(f, tmp / Path(f).name)
    return directory


def is_model_dir(directory: Path) -> bool:
    return (directory / CONFIG).is_file() and (directory / PARAMS).is_dir()


def read_config(path: Path) -> GPTConfig:
    try:
        return GPTConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a GPTConfig JSON object ({e})") from None


def read_classifier(directory: str | Path) -> dict | None:
    """A model directory's classifier.json ({"labels", "pad_id", "pooling"}), or None."""
    path = Path(directory) / CLASSIFIER
    if not path.is_file():
        return None
    try:
        head = json.loads(path.read_text())
        labels = head["labels"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a classifier description ({e})") from None
    if not isinstance(labels, list) or len(labels) < 2:
        raise ValueError(f"{path}: labels must be a list of at least two names")
    return head


def model_dir(path: str | Path) -> Path:
    """The folder a path names: a finetuning run's final model (RUN/model) stands for the run."""
    path = Path(path)
    return path / "model" if is_model_dir(path / "model") else path


def read_model(directory: str | Path) -> tuple[GPTConfig, dict]:
    """(cfg, params) from a gptjax model directory or a training run directory (its latest
    checkpoint; for a finished finetuning run, the model it saved in RUN/model). A
    classifier's params include `score`. `convert.load_model` also opens HF and OpenAI folders."""
    directory = model_dir(Path(directory).absolute())
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    if (directory / "checkpoints").is_dir() and not is_model_dir(directory):
        return _load_from_run(directory)
    if not is_model_dir(directory):
        raise ValueError(
            f"{directory}: not a gptjax checkpoint (expected {CONFIG} and {PARAMS}/), "
            "a training run (checkpoints/) nor a Hugging Face folder (model.safetensors)"
        )
    cfg = read_config(directory / CONFIG)
    head = read_classifier(directory)
    abstract = abstract_params(cfg)
    if head is not None:
        abstract = {k: v for k, v in abstract.items() if k != "lm_head"}
        D, C = cfg.emb_dim, len(head["labels"])
        abstract["score"] = {"kernel": jax.ShapeDtypeStruct((D, C), np.float32)}
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(directory / PARAMS, abstract)
    except Exception as e:  # tensorstore's errors for truncated or garbled files
        raise ValueError(
            f"{directory}: unreadable params ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    if (directory / CHECKSUMS).is_file():
        verify(params, PARAMS, json.loads((directory / CHECKSUMS).read_text()), str(directory))
    return cfg, jax.tree.map(np.asarray, params)


def _load_from_run(directory: Path) -> tuple[GPTConfig, dict]:
    ckpts = RunCheckpoints(directory)
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
    ckpts.close()
    return cfg, jax.tree.map(np.asarray, params)


class RunCheckpoints:
    """Training checkpoints of a run: `OUT/checkpoints/<step>/{params,train,meta}` via orbax's
    CheckpointManager. `params` alone is what `read_model` reads; `train` holds the optimizer
    state, step and rng; `meta` the model config, run options, data position and the crc32c of
    every array, verified by `restore`. Orbax writes each step under a temporary name and renames
    it when complete, so a kill mid-save leaves the previous step restorable; leftovers are
    cleaned on the next start.
    """

    def __init__(self, run_dir: str | Path, *, keep: int = 3):
        self.directory = Path(run_dir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, cleanup_tmp_directories=True, create=True
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("params", "train", "meta")
        )
        # The leftovers of a killed save are removed by a thread the manager starts, and
        # close() does not wait for it (orbax 0.12): a run that stops at once (no checkpoint,
        # lock held) would exit under it, and it would print a traceback. Wait here instead;
        # the steps listed below are then final.
        cleanup = getattr(self.manager, "_cleanup_tmp_directory_future", None)
        if cleanup is not None:
            cleanup.result()
            self.manager._cleanup_tmp_directory_future = None

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    @staticmethod
    def _train(state) -> dict:
        return {"opt_state": state.opt_state, "step": state.step, "rng": state.rng}

    def save(self, step: int, state, meta: dict) -> None:
        train = self._train(state)
        sums = {**checksums(state.params, "params"), **checksums(train, "train")}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state.params),
                train=ocp.args.StandardSave(train),
                meta=ocp.args.JsonSave({**meta, "checksums": sums}),
            ),
        )

    def meta(self, step: int) -> dict:
        """The meta saved with `step`; errors as `restore`'s."""
        with reading(f"checkpoint {self.directory}/{step}"):
            args = ocp.args.Composite(meta=ocp.args.JsonRestore())
            return self.manager.restore(step, args=args)["meta"]

    def restore(self, step: int, abstract_state):
        """The train state saved at `step`, laid out like `abstract_state` (shardings too).

        Raises ChecksumError naming the step and array when a restored array's bytes differ
        from those saved, or a file is truncated, garbled or missing (damage: another
        checkpoint may be whole); CheckpointReadError for any other failure (memory, devices,
        I/O), which says nothing about the files."""
        where = f"checkpoint {self.directory}/{step}"
        with reading(where):
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.StandardRestore(abstract_state.params),
                    train=ocp.args.StandardRestore(self._train(abstract_state)),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        expected = out["meta"].get("checksums", {})
        verify(out["params"], "params", expected, where)
        verify(out["train"], "train", expected, where)
        t = out["train"]
        return type(abstract_state)(out["params"], t["opt_state"], t["step"], t["rng"])

    def restore_params(self, step: int, abstract_params):
        args = ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
        return self.manager.restore(step, args=args)["params"]

    def set_aside(self, step: int) -> Path:
        """Move a damaged step out of the way (to OUT/damaged-checkpoints/<step>), so the run
        can write that step again; it is kept for inspection, not deleted."""
        aside = self.directory.parent / "damaged-checkpoints" / str(step)
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        (self.directory / str(step)).rename(aside)
        self.manager.reload()
        return aside

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
