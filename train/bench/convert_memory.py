"""Benchmark: peak resident memory and time of converting an OpenAI checkpoint of a given size.

    python -m train.bench.convert_memory --size 1558M --dir /tmp/gpt2-1558M-random

writes (once) an OpenAI-format folder of that shape with random weights using the numpy bundle
writer, then runs `python -m convert openai DIR OUT` under /usr/bin/time -v and prints the
weights' size, the peak RSS, their ratio (target < 1.3) and the wall time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptjax.config import GPTConfig
from gptjax.files import write_json
from gptjax.options import parse, run_cli
from gptjax.store.names import param_shapes, rows
from gptjax.store.openai import HPARAMS
from gptjax.store.tf_bundle import write_bundle


@dataclass(frozen=True)
class Options:
    size: str = "1558M"
    """GPT-2 size whose shapes to use"""
    dir: str = "/tmp/gpt2-random"
    """where the random OpenAI folder is (or is written)"""


def write_random_folder(cfg: GPTConfig, folder: Path) -> int:
    """An OpenAI-format folder for `cfg` with random float32 weights; returns the weights' bytes."""
    shapes = param_shapes(cfg)
    nbytes = 4 * sum(int(np.prod(s)) for s in shapes.values())
    if (folder / "model.ckpt.index").is_file():
        return nbytes
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def tensors():
        for ours, _, theirs in rows(cfg):
            shape = (1, *shapes[ours]) if theirs.endswith("/w") else shapes[ours]  # conv1d's
            yield theirs, rng.standard_normal(shape, dtype=np.float32) * 0.02

    write_bundle(folder / "model.ckpt", tensors())
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    write_json(folder / "hparams.json", {k: getattr(cfg, v) for k, v in HPARAMS.items()})
    return nbytes


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    cfg = GPTConfig.preset(opts.size)
    folder = Path(opts.dir)
    nbytes = write_random_folder(cfg, folder)
    out = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    try:
        convert = [sys.executable, "-m", "convert", "openai", str(folder), str(out / "ckpt")]
        res = subprocess.run(["/usr/bin/time", "-v", *convert], capture_output=True, text=True)
        if res.returncode:
            raise ValueError(f"conversion failed: {res.stderr.strip().splitlines()[-1]}")
        rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)[1])
        wall = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", res.stderr)[1]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    weights_gb, rss_gb = nbytes / 1e9, rss_kb * 1024 / 1e9
    print(
        f"{opts.size}: weights {weights_gb:.2f} GB, peak RSS {rss_gb:.2f} GB "
        f"({rss_gb / weights_gb:.2f}x), wall {wall}"
    )


if __name__ == "__main__":
    run_cli(main)
