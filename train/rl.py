"""Reinforcement learning from verifiable rewards (GRPO) through the one training loop.

    python -m train.rl --config train/recipes/rl-arithmetic-tiny.toml
    python -m train.rl --config train/recipes/rl-gsm8k-format-tiny.toml
    python -m train.rl --init-from runs/chat --data gsm8k --reward gptjax.data.gsm8k:correct \\
        --reward gptjax.data.gsm8k:formatted --reward-weights 1 0.2 --num-iterations 2 --out runs/rl

Each rollout takes --batch-size prompts of --data (records with a "prompt", "messages" or
GSM8K's "question"; see gptjax.data.prompts), samples --group completions of each with the
batching engine (--temperature), scores them with every --reward (a `module:function` in TRL's
form, fn(prompts=, completions=, **columns) -> list[float | None], the columns being the
records' other fields such as GSM8K's "answer"; weighted by --reward-weights), normalises the
rewards within each group into advantages and takes --num-iterations x --minibatches clipped
policy-gradient steps on it (--epsilon, --epsilon-high), with a KL penalty to the starting model
when --kl-beta > 0; LoRA (--trainable lora) or all weights. `--data arithmetic:max_operand=9`
generates GSM8K-format problems. With --sft-steps N the run first finetunes (train.instruct,
ChatML) the --init-from model, or a fresh --preset one, on the records' worked answers in
OUT/sft, then starts RL from it.

Prints the mean greedy reward on held-out prompts at each evaluation; writes OUT/metrics.jsonl
(per step: `reward`, `reward_std`, `rewards/<name>` of each reward, `clip_fraction`, `ratio`,
`kl`; `val_reward` at evaluations), OUT/reward.png, checkpoints and each rollout
(OUT/rollouts: rerun the command to continue, bitwise, even between two updates of a rollout)
and the tuned model in OUT/model. `python -m train.rl records --data arithmetic:... --out F`
writes the generated problems as a GSM8K-format JSONL file.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptjax.data import arithmetic
from gptjax.files import write_jsonl
from gptjax.options import parse, run_cli
from gptjax.tasks.rl import RL, Options, sft_stage
from gptjax.training import rewards
from train.options import script_main

__all__ = ["RL", "Options", "main"]


def main(argv=None) -> None:
    def make(opts: Options) -> RL:
        rewards.load_rewards(opts.rewards, opts.reward_weights)  # refused before any training
        init_from = sft_stage(opts) if opts.sft_steps else opts.init_from
        return RL(opts, init_from)

    script_main(Options, make, argv, __doc__, "train.rl", {"records": records_main})


@dataclass(frozen=True)
class RecordsOptions:
    """python -m train.rl records --data arithmetic:n=2000,max_operand=9 --out FILE.jsonl

    Writes generated arithmetic problems as a GSM8K-format JSONL file ({"question", "answer"
    ending "#### N"}), which `--data FILE.jsonl` reads as it reads GSM8K; prints the count."""

    data: str = "arithmetic"
    """arithmetic:n=...,max_operand=...,ops=...,seed=... (the generator's settings)"""
    out: str = "arithmetic.jsonl"
    """the JSONL file to write"""


def records_main(argv) -> None:
    opts = parse(RecordsOptions, argv, RecordsOptions.__doc__)
    name, _, settings = opts.data.partition(":")
    if name != "arithmetic":
        raise ValueError(
            f"--data {opts.data!r}: only generated arithmetic is written ({arithmetic.SPEC})"
        )
    rows = arithmetic.from_spec(settings)
    write_jsonl(opts.out, rows)
    print(f"{len(rows)} GSM8K-format records: {opts.out}")


if __name__ == "__main__":
    run_cli(main)
