"""Benchmark: what the modern recipe buys. The GPT-2 recipe and the modern recipe train at one
size, on the same tokens in the same order, from the same seed; the figure is the tokens each
needs to reach the GPT-2 recipe's final validation loss.

    python -m train.bench.recipe                  (also: gptjax bench recipe)
    python -m train.bench.recipe --ablate --json

trains each recipe with `train.pretrain` (the one training loop) into OUT/<recipe>/, prints a
row per recipe: tokens seen, final val loss, tokens to the target and that as a fraction of
GPT-2's, and writes OUT/recipe.png (val loss against tokens, one line per recipe). The modern
recipe is --recipe (default train/recipes/speedrun-tiny.toml: the tiny model on
../shared/data/python-docs, about 4.5 minutes a recipe on 2 CPU cores); the GPT-2 recipe is the
same file without its switches (`SWITCHES`). `--ablate` adds a row per switch, on its own on
top of GPT-2. With --json, one JSON object per line: recipe, tokens, val_loss,
tokens_to_target (null where the recipe never got there), ratio.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from gptjax.options import parse, read_file, run_cli
from gptjax.tasks import pretrain
from gptjax.training.plot import plot_curves
from gptjax.training.runlog import read_metrics
from train.bench.suite import Row
from train.options import script_main

# The modern recipe's techniques, each a group of pretrain options that goes on and off together
# (the first key names the row). Options outside these groups are the shared setting.
SWITCHES: dict[str, tuple[str, ...]] = {
    "position": ("position", "rope_base"),
    "norm": ("norm",),
    "qk_norm": ("qk_norm",),
    "activation": ("activation",),
    "logit_softcap": ("logit_softcap",),
    "window": ("window",),
    "qkv_bias": ("qkv_bias",),
    "tie_embeddings": ("tie_embeddings",),
    "init": ("init",),
    "optimizer": ("optimizer", "muon_lr", "muon_momentum"),
    "doc_mask": ("doc_mask",),
    "align_docs": ("align_docs",),
}
SWITCHED = {k for group in SWITCHES.values() for k in group}
ABLATE_WINDOW = 128  # the window's row when the recipe leaves it off: half the tiny context


@dataclass(frozen=True)
class Options:
    recipe: str = "train/recipes/speedrun-tiny.toml"
    """the modern recipe: a pretrain config file whose switches (SWITCHES) are its techniques"""
    ablate: bool = False
    """add a row per switch, on its own on top of the GPT-2 recipe"""
    out: str = "runs/bench-recipe"
    """folder for the runs and recipe.png"""
    max_steps: int | None = None
    """override the recipe's steps (unset: the file's)"""
    seed: int = 0
    """the seed of every run (init, data order)"""
    json: bool = False
    """one JSON object per recipe instead of the table"""


def recipes(path: str, ablate: bool) -> dict[str, dict]:
    """{row name: its switch settings}: "gpt2" (none), "modern" (all of the file's), and with
    `ablate` one row per switch."""
    config = read_file(path)
    on = {k: v for keys in SWITCHES.values() for k, v in config.items() if k in keys}
    if not on:
        raise ValueError(f"{path}: sets none of the switches ({', '.join(SWITCHES)})")
    rows = {"gpt2": {}, "modern": on}
    if ablate:
        for name, keys in SWITCHES.items():
            alone = {k: on[k] for k in keys if k in on}
            if name == "window" and not alone:
                alone = {"window": ABLATE_WINDOW}
            if alone:
                rows[name] = alone
    return rows


def curve(out: Path) -> list[tuple[int, float]]:
    """(tokens seen, val loss) at each evaluation of the run in `out`."""
    return [(r["tokens_seen"], r["val_loss"]) for r in read_metrics(out) if "val_loss" in r]


def tokens_to(target: float, points: list[tuple[int, float]]) -> float | None:
    """Tokens at which the val loss first reaches `target`, interpolated linearly between the
    evaluations around the crossing; None if it never does."""
    before = (0, float("inf"))
    for tokens, loss in points:
        if loss <= target:
            if before[1] == float("inf"):
                return float(tokens)
            return before[0] + (before[1] - target) / (before[1] - loss) * (tokens - before[0])
        before = (tokens, loss)
    return None


def train(name: str, settings: dict, opts: Options) -> list[tuple[int, float]]:
    """Train one recipe into OUT/name (fresh: an earlier run there is replaced) and return its
    validation curve. Its options go to OUT/name/recipe.yaml: the file's shared setting plus
    the row's switches, so the folder says what it trained."""
    import yaml

    out = Path(opts.out) / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shared = {k: v for k, v in read_file(opts.recipe).items() if k not in SWITCHED}
    # No samples at the evaluations: the bench reads losses only.
    config = {**shared, **settings, "out": str(out), "seed": opts.seed, "sample_tokens": 0}
    if opts.max_steps is not None:
        config["max_steps"] = opts.max_steps
    (out / "recipe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = ["--config", str(out / "recipe.yaml"), "--no-progress"]
    script_main(pretrain.Options, pretrain.Pretrain, argv, "", "train.pretrain")
    return curve(out)


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    rows = recipes(opts.recipe, opts.ablate)
    curves = {name: train(name, settings, opts) for name, settings in rows.items()}
    target = curves["gpt2"][-1][1]
    reach = {name: tokens_to(target, points) for name, points in curves.items()}
    base = reach["gpt2"] or curves["gpt2"][-1][0]
    if not opts.json:
        print(f"target: the GPT-2 recipe's final val loss, {target:.4f}")
        print(f"{'recipe':>15} {'tokens':>10} {'val loss':>9} {'to target':>10} {'ratio':>6}")
    for name, points in curves.items():
        tokens, loss = points[-1]
        got = reach[name]
        ratio = None if got is None else got / base
        row = dict(recipe=name, val_loss=loss, tokens_to_target=got, ratio=ratio)
        row["switches"] = rows[name]
        if opts.json:
            print(Row("recipe", tokens=tokens, extra=row).json(), flush=True)
        else:
            shown = "never" if got is None else f"{got:,.0f}"
            share = "" if ratio is None else f"{ratio:.2f}"
            print(f"{name:>15} {tokens:>10,} {loss:>9.4f} {shown:>10} {share:>6}", flush=True)
    plot = plot_curves(
        curves,
        Path(opts.out) / "recipe.png",
        xlabel="tokens seen",
        ylabel="validation loss (cross entropy)",
        title=f"tokens to GPT-2's final loss ({target:.3f})",
        hline=target,
    )
    if not opts.json:
        print(f"plot: {plot}")


if __name__ == "__main__":
    run_cli(main)
