"""Reinforcement learning from verifiable rewards (GRPO) through the one training loop.

    python -m train.rl --init-from runs/chat --reward gptjax.data.arithmetic:reward --out runs/rl
    python -m train.rl --config train/recipes/rl-arithmetic-tiny.toml

Each step takes --batch-size prompts, samples --group completions of each with the batching
engine (--temperature), scores them with --reward (a `module:function` given the prompt's
question and the completion's text, returning a float), normalises the rewards within each
group into advantages and takes one clipped policy-gradient step (--clip), with a KL penalty to
the starting model when --kl-beta > 0; LoRA (--trainable lora) or all weights. Prints the
mean greedy reward on held-out prompts at each evaluation; writes OUT/metrics.jsonl (`reward`
and `reward_std` of the samples each step, `val_reward`), OUT/reward.png (reward against step),
checkpoints (rerun to continue) and the tuned model in OUT/model. `--data arithmetic` generates
the problems; a JSONL file of {"prompt": ...} or {"messages": [...]} records brings its own.
With --sft-steps N the run first finetunes (train.instruct, ChatML) the --init-from model, or a
fresh --preset one, on worked answers to the task in OUT/sft, then starts RL from it.
"""

from __future__ import annotations

from gptjax.options import run_cli
from gptjax.tasks.rl import RL, Options, sft_stage
from gptjax.training import rewards
from train.options import script_main

__all__ = ["RL", "Options", "main"]


def main(argv=None) -> None:
    def make(opts: Options) -> RL:
        rewards.load_reward(opts.reward)  # a bad path is refused before any training
        init_from = sft_stage(opts) if opts.sft_steps else opts.init_from
        return RL(opts, init_from)

    script_main(Options, make, argv, __doc__, "train.rl")


if __name__ == "__main__":
    run_cli(main)
