"""The `gptjax` command: every job of the project as a subcommand.

    gptjax --help                 lists the subcommands, one line each
    gptjax pretrain --help        the same options as `python -m train.pretrain --help`
    gptjax pretrain --config train/recipes/demo.toml --out runs/demo

Each subcommand runs the module it names with the rest of the command line, so `gptjax X ...`
and `python -m ... ...` are one program.
"""

from __future__ import annotations

from gptjax.options import Command, dispatch, run_cli

COMMANDS = {
    "download": Command("fetch OpenAI's GPT-2 weights (124M ... 1558M) into the cache",
                        "convert.__main__:download"),
    "convert": Command("openai | hf | export-hf | check: GPT-2 weights to and from gptjax",
                       "convert.__main__:main"),
    "tokenizer": Command("train a byte-level BPE tokenizer of your own", "train.tokenizer:main"),
    "prepare": Command("tokenize a corpus into llm.c .bin shards", "train.prepare:main"),
    "pretrain": Command("pretrain a GPT on text or shards (the one training loop)",
                        "train.pretrain:main"),
    "classify": Command("finetune a classifier (head, last block, all, LoRA); `predict`",
                        "train.classify:main"),
    "instruct": Command("instruction finetuning on Alpaca-style data; `answer`",
                        "train.instruct:main"),
    "dpo": Command("preference tuning (DPO) against a frozen reference", "train.dpo:main"),
    "rl": Command("RL from verifiable rewards (GRPO) with a reward function", "train.rl:main"),
    "sae": Command("a sparse autoencoder on one hook point (SAELens's format)", "train.sae:main"),
    "judge": Command("score answers with a judge model (Ollama or OpenAI API)", "train.judge:main"),
    "hellaswag": Command("HellaSwag accuracy of any checkpoint", "train.hellaswag:main"),
    "eval-harness": Command(
        "lm-evaluation-harness tasks on any checkpoint, in JAX", "train.eval_harness:main"
    ),
    "generate": Command("generate text from any checkpoint, streamed", "train.generate:main"),
    "serve": Command("serve a checkpoint with OpenAI's API and a web page", "train.serve:main"),
    "report": Command("a report card of runs: losses, bpb, scores, reward, speed",
                      "train.report:main"),
    "bench": Command("benchmarks (--list names them; default: tokens/s beside HF)",
                     "train.bench:main"),
}  # fmt: skip


def main(argv=None) -> None:
    run_cli(lambda: dispatch(COMMANDS, argv, __doc__, prog="gptjax"))


if __name__ == "__main__":
    main()
