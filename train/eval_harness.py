"""lm-evaluation-harness tasks on any checkpoint (ours, Hugging Face or OpenAI), computed in JAX.

    python -m train.eval_harness --ckpt runs/gpt2-124M --tasks hellaswag,arc_easy,lambada_openai
    python -m train.eval_harness --ckpt runs/demo --tasks my_task --include-path my-tasks/

runs lm-eval's own `simple_evaluate` with a gptjax model (see `gptjax.eval.harness`), prints
lm-eval's results table and, with --output-path, writes lm-eval's results JSON there (and each
sample with --log-samples). Needs the `eval` extra: pip install 'gptjax[eval]'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from convert.load import load_model
from gptjax.data import tokenizer
from gptjax.files import write_json
from gptjax.options import parse, run_cli


@dataclass(frozen=True)
class Options:
    ckpt: str
    """checkpoint, run, Hugging Face or OpenAI folder"""
    tasks: str
    """lm-eval task names, comma-separated (groups too, e.g. hellaswag,arc_easy)"""
    include_path: str | None = None
    """a folder of your own task YAML files"""
    num_fewshot: int | None = None
    """examples in each prompt (default: the task's own)"""
    limit: float | None = None
    """evaluate only the first N documents of each task (a fraction if < 1)"""
    batch_size: int = 16
    """rows per batch, across all devices"""
    output_path: str | None = None
    """write lm-eval's results JSON to this file"""
    log_samples: bool = False
    """with --output-path: also write every sample (inputs, outputs, scores)"""
    seed: int = 1234
    """seed for the order of few-shot examples (lm-eval's default)"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """compute dtype (log-probs are float32 either way)"""


def evaluate(lm, names: list[str], manager, opts: Options) -> dict:
    """lm-eval's simple_evaluate over `names`; a task whose files do not parse is one line."""
    from lm_eval import simple_evaluate

    try:
        return simple_evaluate(
            model=lm,
            tasks=names,
            num_fewshot=opts.num_fewshot,
            limit=opts.limit,
            task_manager=manager,
            log_samples=opts.log_samples,
            random_seed=opts.seed,
            numpy_random_seed=opts.seed,
            torch_random_seed=opts.seed,
            fewshot_random_seed=opts.seed,
        )
    except (KeyError, FileNotFoundError, TypeError) as e:  # a task's YAML or data
        raise ValueError(f"--tasks {','.join(names)}: the task did not load ({e})") from None


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    try:
        from lm_eval.utils import make_table

        from gptjax.eval.harness import GptjaxLM, task_manager
    except ImportError:
        raise ValueError("lm-eval is not installed; pip install 'gptjax[eval]'") from None
    names = [n.strip() for n in opts.tasks.split(",") if n.strip()]
    cfg, params = load_model(opts.ckpt)
    tokenizer.check_vocab(cfg.vocab_size, opts.ckpt)
    manager = task_manager(opts.include_path, names)
    lm = GptjaxLM(cfg, params, batch_size=opts.batch_size, dtype=opts.dtype)
    results = evaluate(lm, names, manager, opts)
    print(make_table(results))
    if opts.output_path:
        out = {k: v for k, v in results.items() if k != "samples"}
        if opts.log_samples:
            out["samples"] = results["samples"]
        write_json(opts.output_path, json.loads(json.dumps(out, default=str)))
        print(f"results: {opts.output_path}")


if __name__ == "__main__":
    run_cli(main)
