"""Where a run's records go besides OUT/metrics.jsonl: TensorBoard event files and Weights & Biases.

Both receive exactly the records metrics.jsonl gets, from the run log: numbers as scalars (tagged
by their metrics.jsonl key), strings (generated samples) as text, and the run's options and model
config as hyperparameters. Both are optional extras, imported only when asked for.

A resumed run redoes the steps after its checkpoint. TensorBoard is told to hide what the earlier
run logged past that step (`purge_step`); W&B refuses a step it already has, so the W&B run id and
the last step sent are kept in OUT/wandb.json and a resumed run continues that run from the next
step (resume is bitwise exact, so the values it skips are the ones it would have sent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flax import traverse_util

from gptjax.errors import first_line
from gptjax.files import write_json

CHOICES = ("jsonl", "tensorboard", "wandb")
EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}
WANDB_STATE = "wandb.json"


def check_installed(names: tuple[str, ...]) -> None:
    """A one-line error, before any work, for a destination whose package is missing."""
    import importlib.util

    for name in names:
        if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
            module, extra = EXTRAS[name]
            raise ValueError(
                f"--log-to {name}: the {module} package is not installed; "
                f"pip install 'gptjax[{extra}]'"
            )


def open_trackers(lc, config: dict, start: int) -> list:
    """The trackers the loop's config asks for (`log_to`), writing under its `out`; `start` is
    the step the run starts after (0, or the checkpoint it resumed from)."""
    trackers, out = [], Path(lc.out)
    if "tensorboard" in lc.log_to:
        trackers.append(TensorBoard(out, config, start))
    if "wandb" in lc.log_to:
        trackers.append(WandB(out, config, lc.wandb_project, lc.wandb_entity))
    return trackers


def scalars_and_texts(record: dict) -> tuple[dict[str, float], dict[str, str]]:
    """A metrics.jsonl record's numbers and strings, without its step."""
    numbers = {
        k: float(v)
        for k, v in record.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    texts = {k: v for k, v in record.items() if isinstance(v, str)}
    return numbers, texts


class TensorBoard:
    """OUT/tensorboard/events.*, written by tensorboardX (no TensorFlow needed)."""

    def __init__(self, out: Path, config: dict, start: int):
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        # One file per start (two starts within a second would otherwise share a name), and on
        # resume TensorBoard hides what an interrupted run logged after the checkpoint.
        self.writer = SummaryWriter(
            str(out / "tensorboard"),
            purge_step=start + 1 if start else None,
            filename_suffix=f".{os.getpid()}.{start}",
        )
        if not start:
            self.writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```", 0)
            # In this run, not a sub-run (add_hparams' way), so its scalars sit beside them.
            flat = {
                k: str(v) if isinstance(v, list | tuple) else v
                for k, v in traverse_util.flatten_dict(config, sep="/").items()
                if v is not None
            }
            for proto in hparams(flat, {}):
                self.writer.file_writer.add_summary(proto, 0)

    def write(self, records: list[dict]) -> None:
        for record in records:
            numbers, texts = scalars_and_texts(record)
            for key, value in numbers.items():
                self.writer.add_scalar(key, value, record["step"])
            for key, text in texts.items():
                self.writer.add_text(key, text, record["step"])
        self.writer.flush()

    def where(self) -> str:
        return f"tensorboard: tensorboard --logdir {self.writer.logdir}"

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run: WANDB_MODE, WANDB_API_KEY and the rest of W&B's variables apply;
    its id and last step are kept in OUT/wandb.json, so a resumed run continues it."""

    def __init__(self, out: Path, config: dict, project: str | None, entity: str | None):
        import wandb

        self.wandb, self.state_path = wandb, out / WANDB_STATE
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.last = int(state.get("step", 0))
        try:
            self.run = wandb.init(
                project=project or os.environ.get("WANDB_PROJECT") or "gptjax",
                entity=entity,
                name=out.absolute().name,
                id=state.get("id"),  # None: W&B picks one, kept below
                resume="allow",
                dir=str(out),
                config=config,
                # The console (progress bar included) stays ours; W&B keeps to the metrics.
                settings=wandb.Settings(console="off", quiet=True),
            )
        except Exception as e:  # not logged in, no network in online mode, ...
            raise ValueError(
                f"--log-to wandb: could not start a W&B run ({first_line(e)}); run `wandb login` "
                "or set WANDB_MODE=offline"
            ) from None
        self._save()

    def _save(self) -> None:
        write_json(self.state_path, {"id": self.run.id, "step": self.last})

    def write(self, records: list[dict]) -> None:
        for record in records:
            step = record["step"]
            if step <= self.last:
                continue  # already in this W&B run, from before a resume
            numbers, texts = scalars_and_texts(record)
            tables = {
                k: self.wandb.Table(columns=["step", k], data=[[step, v]]) for k, v in texts.items()
            }
            self.run.log({**numbers, **tables}, step=step)
            self.last = step
        self._save()

    def where(self) -> str:
        return f"wandb: run {self.run.id} ({self.run.url or self.run.dir})"

    def close(self) -> None:
        self.run.finish()
