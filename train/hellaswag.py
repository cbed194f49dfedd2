"""HellaSwag accuracy of a checkpoint (any folder `convert` opens), on every device.

    python -m train.hellaswag --ckpt runs/gpt2-124M [--limit 1000]

downloads HellaSwag's validation file into the cache (sha256-checked) unless --data is given,
scores the four endings of each example (see `gptjax.hellaswag`) and prints
`hellaswag: acc 0.2859, acc_norm 0.2955 over 10042 examples (S s)` (OpenAI's 124M).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from convert.load import load_model
from gptjax import hellaswag, parallel, tokenizer
from gptjax.cache import fetch
from gptjax.options import option, parse, run_cli
from train.evaluate import Evaluator


@dataclass(frozen=True)
class Options:
    ckpt: str = option("runs/default", "checkpoint, run, Hugging Face or OpenAI folder")
    data: str | None = option(None, "HellaSwag .jsonl (default: the validation file, cached)")
    limit: int | None = option(None, "score only the first N examples")
    batch_size: int = option(8, "examples per batch (4 rows each), across all devices")
    dtype: str = option("float32", "compute dtype", choices=["float32", "bfloat16"])


class HellaSwag:
    """Scores one model on a HellaSwag file: `scores(params)` -> {"acc", "acc_norm"}."""

    def __init__(self, cfg, data: str | None, limit: int | None, batch_size: int, dtype,
                 enc=None):  # fmt: skip
        path = data or fetch("hellaswag_val.jsonl")
        examples = hellaswag.load(path, limit)
        enc = enc or tokenizer.gpt2()
        self.data = hellaswag.Examples.build(examples, enc, cfg.context_length)
        step = hellaswag.make_score_step(cfg, parallel.compute_dtype(dtype))
        self.evaluator = Evaluator(step, parallel.make_mesh(), batch_size, None)

    def scores(self, params) -> dict[str, float]:
        return hellaswag.accuracies(self.evaluator.sums(params, self.data, None))


def main(argv=None) -> None:
    opts = parse(Options, argv, description=__doc__.split("\n\n")[0])
    cfg, params = load_model(opts.ckpt)
    tokenizer.check_vocab(cfg.vocab_size, opts.ckpt)
    start = time.perf_counter()
    bench = HellaSwag(cfg, opts.data, opts.limit, opts.batch_size, opts.dtype)
    s = bench.scores(params)
    print(f"hellaswag: acc {s['acc']:.4f}, acc_norm {s['acc_norm']:.4f} over "
          f"{len(bench.data)} examples ({time.perf_counter() - start:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
