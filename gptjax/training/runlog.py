"""A run's record: progress bar, OUT/config.json, OUT/metrics.jsonl (a record per step), the
task's plots, redrawn at each evaluation, and the same records to TensorBoard or W&B
(`--log-to`). Process 0 writes."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from gptjax import accelerator, heap
from gptjax.files import write_json
from gptjax.training import parallel
from gptjax.training.flops import peak_flops
from gptjax.training.plot import plot_metrics
from gptjax.training.trackers import open_trackers

STEP_METRICS = ("loss", "lr", "grad_norm", "tokens")  # the train step's own; others are kept


def read_metrics(out: str | Path, *, timing: bool = True) -> list[dict]:
    """OUT/metrics.jsonl as records; timing=False drops what depends on the clock (rates, MFU),
    leaving what a resumed run must reproduce exactly."""
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line]
    if timing:
        return records
    return [
        {k: v for k, v in r.items() if not (k.endswith("_per_s") or k == "mfu")} for r in records
    ]


def command() -> str:
    """How this process was started, as a shell line (for the report card)."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def environment() -> dict:
    """The machine and software a run ran on: its devices, CPU model and library versions."""
    names = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tiktoken", "gptjax")
    software = {"python": platform.python_version()}
    software |= {n: v for n in names if (v := accelerator.installed(n)) is not None}
    software |= accelerator.versions()
    return {
        "devices": parallel.describe_devices(),
        "cpu": accelerator.cpu_model(),
        "platform": platform.platform(),
        "software": software,
    }


class RunLog:
    """Progress bar, OUT/metrics.jsonl (a record per step) and the task's plots; process 0
    writes."""

    def __init__(self, lc, task, start: int, total: int):
        """`lc`: the loop's LoopConfig; `task`: its Task (identity, seen, plots)."""
        out = Path(lc.out)
        self.lead = jax.process_index() == 0
        self.metrics, self.plots = out / "metrics.jsonl", task.plots
        self.out, self.t0 = out, time.perf_counter()
        self.seen_key, per_row = task.seen
        self.x = getattr(task, "plot_x", None) or self.seen_key  # the plots' x axis
        self.seen_per_step = lc.batch_size * per_row
        self.bar = tqdm(
            total=total, initial=start, unit="step", disable=not (self.lead and lc.progress)
        )
        # MFU where the task knows its FLOPs per seen token and the devices' peak is known.
        flops, peak = getattr(task, "flops_per_token", None), peak_flops()
        self.flops_share = flops / peak if flops and peak else None
        self.trackers = []
        if not self.lead:
            return
        out.mkdir(parents=True, exist_ok=True)
        config = {**task.identity, "options": lc.options, "command": lc.command or command()}
        config["kernels"] = task.kernels.to_dict()
        config["environment"] = environment() | {"heap": "kept" if heap.kept() else "default"}
        write_json(out / "config.json", config)
        # On resume, drop records past the restored step: they are about to be redone.
        old = self.metrics.read_text().splitlines() if self.metrics.exists() else []
        kept = [line for line in old if line and json.loads(line)["step"] <= start]
        self.metrics.write_text("".join(line + "\n" for line in kept))
        self.trackers = open_trackers(lc, config, start)

    def step_records(self, steps: list[int], metrics: list[dict], replicated: bool) -> list[dict]:
        """Records of `steps` from their fetched metrics; tokens/s (and MFU) over the time since
        the previous fetch, which is when these steps ran."""
        now = time.perf_counter()
        rate = len(steps) * self.seen_per_step / max(now - self.t0, 1e-9)
        self.t0 = now
        unit = self.seen_key.removesuffix("_seen")
        records = []
        for step, m in zip(steps, metrics, strict=True):
            # Device metrics are replicated under pmap; a task's host figures are not.
            m = {k: float(v[0] if replicated and np.ndim(v) else v) for k, v in m.items()}
            records.append(
                {
                    "step": step,
                    "train_loss": m["loss"],
                    "lr": m["lr"],
                    "grad_norm": m["grad_norm"],
                    self.seen_key: step * self.seen_per_step,
                    f"{unit}_per_s": rate,
                    **{k: v for k, v in m.items() if k not in STEP_METRICS},
                }
            )
            shown = {"loss": f"{m['loss']:.3f}", f"{unit[:3]}/s": f"{rate:,.0f}"}
            if self.flops_share is not None:
                records[-1]["mfu"] = rate * self.flops_share
                shown["mfu"] = f"{100 * records[-1]['mfu']:.1f}%"
            self.bar.update(1)
            self.bar.set_postfix(shown)
        return records

    def restart_clock(self) -> None:
        """Evals, plots and checkpoints are not training: the next records' tokens/s counts from
        here, not from the last fetch."""
        self.t0 = time.perf_counter()

    def say(self, line: str) -> None:
        if self.lead and line:
            self.bar.write(line)

    def write(self, records: list[dict], *, plot: bool) -> None:
        """Append `records` to metrics.jsonl; `plot`: then redraw the task's plots."""
        if not self.lead:
            return
        with open(self.metrics, "a") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
        for tracker in self.trackers:
            tracker.write(records)
        if plot:
            for name, spec in self.plots.items():
                panels = spec if isinstance(spec, list) else [spec]
                plot_metrics(self.metrics, self.out / name, self.x, panels)

    def close(self) -> None:
        self.bar.close()
        for tracker in self.trackers:
            tracker.close()
        if self.lead:
            names = "  ".join(str(self.out / n) for n in self.plots)
            print(f"metrics: {self.metrics}\nplots: {names}")
            for tracker in self.trackers:
                print(tracker.where())
