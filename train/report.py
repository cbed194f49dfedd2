"""A report card: what a set of runs holds, gathered into one Markdown page and one JSON file.

    python -m train.report runs/tok runs/pretrain runs/chat runs/rl --out runs/report

reads each run's config.json (its task, command, machine and software), metrics.jsonl (last
losses, bits per byte, HellaSwag, lm-eval scores, DPO margins, RL reward, tokens/s), a judge's
scores.json and lm-eval's results_*.json beside it, and a tokenizer folder's figures; writes
OUT/report.md and OUT/report.json, with each run's plots copied to OUT/<run>/. A stage no run
holds is left out, not filled in. Prints the path of the report.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from tyro.conf import Positional

from gptjax.data import bpe
from gptjax.files import atomic_file, write_json
from gptjax.options import parse, run_cli

STAGES = {None: "pretraining", "classify": "classification", "instruct": "instruction",
          "dpo": "preference (DPO)", "rl": "RL", "sae": "sparse autoencoder"}  # fmt: skip
# metric key in metrics.jsonl -> what the card calls it (the last value logged is shown)
FIGURES = {
    "val_loss": "val loss", "val_bpb": "val bits per byte", "val_perplexity": "val perplexity",
    "hellaswag_acc_norm": "HellaSwag acc_norm", "val_acc": "val accuracy",
    "val_reward_margin": "val DPO reward margin", "val_pref_acc": "val preference accuracy",
    "reward": "sampled reward", "val_reward": "val reward (greedy)",
    "val_l0": "SAE L0", "val_explained_variance": "SAE explained variance",
    "val_dead": "SAE dead latents", "val_ce_sae": "CE with the SAE",
    "val_ce_clean": "CE without", "val_ce_recovered": "CE recovered",
}  # fmt: skip
SPEEDS = ("tokens_per_s", "examples_per_s")


@dataclass(frozen=True)
class Options:
    runs: Positional[tuple[str, ...]]
    """run folders (and tokenizer folders) to gather"""
    out: str = "runs/report"
    """where report.md, report.json and the plots go"""


def read_records(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip()]


def gather(run: Path) -> dict:
    """One run's entry of the card."""
    if bpe.is_tokenizer_dir(run):
        meta = json.loads((run / bpe.META).read_text())
        fit = meta.get("held_out_bytes_per_token", {})
        figures = {"tokens": meta["n_vocab"]}
        figures |= {f"held-out bytes/token ({k})": round(v, 3) for k, v in fit.items()}
        return {"name": run.name, "path": str(run), "stage": "tokenizer", "figures": figures}
    if not (run / "config.json").is_file():
        raise ValueError(f"{run}: neither a run (config.json) nor a tokenizer folder")
    config = json.loads((run / "config.json").read_text())
    records = read_records(run / "metrics.jsonl")
    figures = {}
    for key, label in FIGURES.items():
        values = [r[key] for r in records if key in r]
        if values:
            figures[label] = values[-1]
            if key in ("reward", "val_reward") and len(values) > 1:
                figures[f"{label}, first"] = values[0]
    for record in records[-1:]:
        figures |= {k: v for k, v in record.items() if k.startswith("harness/")}
    for key in SPEEDS:
        rates = [r[key] for r in records if key in r]
        if rates:
            figures[f"{key.replace('_per_s', '')}/s (median)"] = statistics.median(rates)
    if records:
        figures["steps"] = records[-1]["step"]
    figures |= judged(run) | harness_results(run)
    return {
        "name": run.name,
        "path": str(run),
        "stage": STAGES.get(config.get("task"), config.get("task")),
        "command": config.get("command"),
        "environment": config.get("environment"),
        "figures": figures,
        "plots": sorted(p.name for p in run.glob("*.png")),
    }


def judged(run: Path) -> dict:
    path = run / "scores.json"
    if not path.is_file():
        return {}
    scores = json.loads(path.read_text())
    return {f"judge score ({scores.get('model')})": scores.get("mean")}


def harness_results(run: Path) -> dict:
    """The newest lm-eval results file under the run (train.eval_harness --output-path)."""
    files = sorted(run.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    results = json.loads(files[-1].read_text()).get("results", {})
    return {
        f"lm-eval {task} {metric.split(',')[0]}": value
        for task, values in results.items()
        for metric, value in values.items()
        if isinstance(value, int | float) and "stderr" not in metric
    }


def markdown(entries: list[dict]) -> str:
    lines = [f"# Report card\n\n{time.strftime('%Y-%m-%d %H:%M')}, {len(entries)} runs.\n"]
    for e in entries:
        lines.append(f"## {e['stage']}: {e['name']}\n\n`{e['path']}`\n")
        if e.get("command"):
            lines.append(f"```\n{e['command']}\n```\n")
        lines.append("| figure | value |\n|---|---|")
        lines += [f"| {k} | {fmt(v)} |" for k, v in e["figures"].items()]
        env = e.get("environment") or {}
        if env:
            soft = ", ".join(f"{k} {v}" for k, v in env.get("software", {}).items())
            lines.append(f"\nMachine: {env.get('cpu')}; devices {env.get('devices')}; {soft}.")
        lines += [f"\n![{p}]({e['name']}/{p})" for p in e.get("plots", [])]
        lines.append("")
    return "\n".join(lines) + "\n"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    entries = []
    for name in opts.runs:
        run = Path(name)
        if not run.is_dir():
            raise FileNotFoundError(f"{run}: no such run folder")
        entries.append(gather(run))
    out = Path(opts.out)
    for e in entries:
        for plot in e.get("plots", []):
            (out / e["name"]).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(e["path"]) / plot, out / e["name"] / plot)
    write_json(out / "report.json", {"made": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": entries})
    with atomic_file(out / "report.md") as tmp:
        tmp.write_text(markdown(entries))
    print(f"report: {out / 'report.md'} ({len(entries)} runs; {out / 'report.json'})")


if __name__ == "__main__":
    run_cli(main)
