"""HellaSwag accuracy of a checkpoint (any folder `gptjax.store.Model` opens), on every device.

    python -m train.hellaswag --ckpt runs/gpt2-124M [--limit 1000]

downloads HellaSwag's validation file into the cache (sha256-checked) unless --data is given,
scores the four endings of each example (see `gptjax.eval.hellaswag`) and prints
`hellaswag: acc 0.2859, acc_norm 0.2955 over 10042 examples (S s)` (OpenAI's 124M).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from gptjax.eval.hellaswag import HellaSwag
from gptjax.options import parse, run_cli
from gptjax.store import Model


@dataclass(frozen=True)
class Options:
    ckpt: str = "runs/default"
    """checkpoint, run, Hugging Face or OpenAI folder"""
    data: str | None = None
    """HellaSwag .jsonl (unset: the validation file, cached)"""
    limit: int | None = None
    """score only the first N examples"""
    batch_size: int = 8
    """examples per batch (4 rows each), across all devices"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """compute dtype"""


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    model = Model.open(opts.ckpt)
    enc = model.encoding()
    start = time.perf_counter()
    bench = HellaSwag(model.cfg, opts.data, opts.limit, opts.batch_size, opts.dtype, enc)
    s = bench.scores(model.params)
    print(
        f"hellaswag: acc {s['acc']:.4f}, acc_norm {s['acc_norm']:.4f} over "
        f"{len(bench.data)} examples ({time.perf_counter() - start:.1f} s)"
    )


if __name__ == "__main__":
    run_cli(main)
