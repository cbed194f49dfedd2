"""A training run's checkpoints: `OUT/checkpoints/<step>/{params,train,meta}` through orbax's
CheckpointManager, with the crc32c of every array verified on restore. Model folders (what a run
leaves at the end, or a converter writes) are `gptjax.store`'s."""

from __future__ import annotations

import shutil
from pathlib import Path

import orbax.checkpoint as ocp

from gptjax.store.checksum import checksums, verify
from gptjax.store.damage import reading


class RunCheckpoints:
    """Training checkpoints of a run: `OUT/checkpoints/<step>/{params,train,meta}` via orbax's
    CheckpointManager. `params` alone is what `gptjax.store` reads of a run; `train` holds the
    optimizer state, step and rng; `meta` the model config, run options, data position and the
    crc32c of every array, verified by `restore`. Orbax writes each step under a temporary name
    and renames it when complete, so a kill mid-save leaves the previous step restorable;
    leftovers are cleaned on the next start.
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
