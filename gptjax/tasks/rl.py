"""The RL task: GRPO on the completions the current policy samples, scored by a reward function,
its options (`python -m train.rl`) and the SFT stage that may come first."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from gptjax.config import PRESETS
from gptjax.data import arithmetic, bpe, chat, instruct
from gptjax.data.lengths import padded_length
from gptjax.inference.engine import Engine
from gptjax.store import Model, open_or_preset
from gptjax.tasks import instruct as sft
from gptjax.tasks.options import LoRAOptions, starting_model
from gptjax.training import grpo, loop, parallel, rewards
from gptjax.training.finetune import lora_config, trainable_paths, with_adapters
from gptjax.training.task import Task


@dataclass(frozen=True)
class Options(LoRAOptions):
    data: str = "arithmetic"
    """arithmetic (generated problems), or a JSONL file of {"prompt"} / {"messages"} records"""
    reward: str = "gptjax.data.arithmetic:reward"
    """module:function(prompt, completion) -> float"""
    preset: Literal[*PRESETS] = "tiny"
    """model size SFT starts from when no --init-from is given"""
    trainable: Literal["all", "lora"] = "all"
    """what trains"""
    group: int = 8
    """completions sampled per prompt (the group its rewards are normalised in)"""
    batch_size: int = 8
    """prompts per step (each brings --group completions)"""
    max_new_tokens: int = 16
    """longest completion"""
    temperature: float = 1.0
    """sampling temperature of the rollouts"""
    top_p: float = 1.0
    """nucleus cut of the rollouts (1: none)"""
    clip: float = 0.2
    """PPO clip range of the probability ratio"""
    kl_beta: float = 0.0
    """weight of the KL penalty to the starting model (0: none)"""
    lr: float = 1e-5
    """learning rate"""
    problems: int = 2000
    """arithmetic: problems generated (training; --val-prompts more are held out)"""
    max_operand: int = 99
    """arithmetic: operands in [0, this]"""
    ops: str = "+*"
    """arithmetic: operations drawn from"""
    val_prompts: int = 64
    """held-out prompts answered greedily at each evaluation"""
    eval_every: int = 10
    """steps between evaluations"""
    sft_steps: int = 0
    """first finetune on worked answers for this many steps (arithmetic only)"""
    sft_lr: float = 1e-3
    """learning rate of the SFT stage"""
    sft_batch_size: int = 32
    """batch of the SFT stage"""
    sft_tokenizer: int = 0
    """SFT of a fresh --preset model: first train a tokenizer of this many tokens on the task's
    text (OUT/sft/tokenizer; 0: GPT-2's). A small vocabulary makes a tiny model's steps fast.
    """


def questions(opts: Options) -> tuple[list, list]:
    """(training, held-out) prompts: each a list of messages ending with the user's turn."""
    if opts.data == "arithmetic":
        n = opts.problems + opts.val_prompts
        qs = arithmetic.problems(n, opts.seed, opts.max_operand, opts.ops)
        turns = [[{"role": "user", "content": q}] for q in qs]
    else:
        turns = chat.load_prompts(opts.data)
    if len(turns) <= opts.val_prompts:
        raise ValueError(f"{opts.data}: {len(turns)} prompts, not more than --val-prompts")
    return turns[: len(turns) - opts.val_prompts], turns[len(turns) - opts.val_prompts :]


class RL(Task):
    """GRPO on the completions the current policy samples."""

    count, on_policy, plot_x = "count", True, "step"

    def __init__(self, opts: Options, init_from: str | None):
        self.opts, self.out = opts, Path(opts.out)
        start = starting_model(init_from, opts.preset, opts.drop_rate)
        if start.params is None:
            raise ValueError("--init-from is required (or --sft-steps to tune a --preset first)")
        self.cfg, self.base, self.start = start.cfg, start.params, start
        self.enc, self.template = start.encoding(), chat.template_of(start.task)
        self.eos = chat.end_id(self.enc, self.template)
        self.score = rewards.load_reward(opts.reward)
        train, val = questions(opts)
        self.prompts = {"train": train, "validation": val}
        self.ids = {k: [self.encode(m) for m in v] for k, v in self.prompts.items()}
        self.train = grpo.PromptRows(len(train))
        self.data = {"train": self.train}
        self.lcfg = lora_config(opts.trainable, opts.lora_rank, opts.lora_alpha, opts.lora_targets)
        self.trainable = trainable_paths(opts.trainable, self.cfg, self.lcfg)
        self.dtype = parallel.compute_dtype(opts.dtype)
        self.kernels = opts.kernels_for(self.dtype)
        slots = max(opts.batch_size * opts.group, opts.val_prompts)
        self.engine = Engine(self.cfg, self.base, slots=slots, eos_id=self.eos, dtype=self.dtype)
        logp = lambda p, t: grpo.token_logprobs(
            self.cfg, p, t, dtype=self.dtype, kernels=self.kernels
        )
        self.logp = jax.jit(logp)
        self.merge = jax.jit(self.model_params)
        self.ref = jax.device_put(self.base) if opts.kl_beta > 0 else None
        keys = ("reward", "group", "max_new_tokens", "temperature", "top_p", "clip", "kl_beta")
        run = {k: getattr(opts, k) for k in keys} | {"data": opts.data, "lora": opts.trainable}
        self.identity = {"task": "rl", "model": self.cfg.to_dict(), "rl": run}
        self.plots = {"reward.png": ("reward", {"reward": "sampled", "val_reward": "val (greedy)"})}

    def encode(self, messages: list[dict]) -> list[int]:
        """A prompt's ids in the model's template, ready for its answer."""
        if self.template == "chatml":
            return chat.encode(self.enc, messages, add_generation_prompt=True)
        return self.enc.encode_ordinary(
            instruct.prompt_text({"instruction": chat.question(messages)})
        )

    def rewards(self, split: str, rows, completions: list[list[int]]) -> np.ndarray:
        """The reward of each completion (its end-of-turn token dropped) to prompt `rows`."""
        prompts = [chat.question(self.prompts[split][r]) for r in rows]
        texts = [self.enc.decode(c[:-1] if c[-1:] == [self.eos] else c) for c in completions]
        return rewards.score(self.score, self.opts.reward, prompts, texts)

    def rollout(self, params, batch: dict, step: int) -> tuple[dict, dict]:
        opts, G = self.opts, self.opts.group
        rows = np.repeat(batch["row"], G)
        policy = self.merge(params)
        self.engine.set_params(policy)
        prompts = [self.ids["train"][r] for r in rows]
        seeds = np.random.SeedSequence([opts.seed, step]).generate_state(len(rows)) >> 1
        completions = self.engine.complete(
            prompts,
            max_tokens=opts.max_new_tokens,
            seeds=[int(s) for s in seeds],
            temperature=opts.temperature,
            top_p=opts.top_p,
        )
        scores = self.rewards("train", rows, completions)
        tokens, mask = grpo.pack(prompts, completions, self.enc.eot_token, self.cfg.context_length)
        out = {
            "tokens": tokens,
            "mask": mask,
            "advantages": grpo.group_advantages(scores.reshape(-1, G)).reshape(-1),
            "old_logp": np.asarray(self.logp(policy, tokens)),
        }
        figures = {"reward": float(scores.mean()), "reward_std": float(scores.std())}
        figures["completion_tokens"] = float(np.mean([len(c) for c in completions]))
        if self.ref is not None:
            out["ref_logp"] = np.asarray(self.logp(self.ref, tokens))
            d = out["ref_logp"] - out["old_logp"]
            figures["kl"] = float(np.sum((np.exp(d) - d - 1) * mask) / max(mask.sum(), 1))
        return out, figures

    def loss_fn(self, params, batch, rng, train):
        logp = grpo.token_logprobs(
            self.cfg,
            self.model_params(params),
            batch["tokens"],
            dtype=self.dtype,
            kernels=self.kernels,
        )
        s, n, _ = grpo.clipped_loss(
            logp,
            batch["old_logp"],
            batch["advantages"],
            batch["mask"],
            clip=self.opts.clip,
            kl_beta=self.opts.kl_beta,
            ref_logp=batch.get("ref_logp"),
        )
        return s, n

    def evaluate(self, params, step: int) -> tuple[dict, str]:
        """The mean reward of greedy answers to the held-out prompts."""
        self.engine.set_params(self.merge(params))
        prompts = self.ids["validation"]
        answers = self.engine.complete(
            prompts, max_tokens=self.opts.max_new_tokens, seeds=[0] * len(prompts), temperature=0.0
        )
        reward = float(self.rewards("validation", range(len(prompts)), answers).mean())
        return {
            "val_reward": reward
        }, f"step {step}: val reward {reward:.3f} (greedy, {len(prompts)} prompts)"

    def init_params(self):
        return with_adapters(self.base, self.lcfg, jax.random.key(self.opts.seed))

    def describe(self, params) -> str:
        o = self.opts
        return f"{super().describe(params)}; {o.group} completions a prompt, reward {o.reward}"

    def final_model(self, params) -> Model:
        p = self.model_params(params)
        return Model(self.cfg, p, task=self.start.task, tokenizer=self.start.tokenizer)


def sft_stage(opts: Options) -> str:
    """Finetune on worked answers to the task (train.instruct, ChatML) in OUT/sft; -> the model
    RL starts from."""
    if opts.data != "arithmetic":
        raise ValueError("--sft-steps: worked answers exist for --data arithmetic only")
    out = Path(opts.out) / "sft"
    data = out / "data.jsonl"
    convs = arithmetic.conversations(opts.problems, opts.seed + 1, opts.max_operand, opts.ops)
    if not data.is_file():
        out.mkdir(parents=True, exist_ok=True)
        data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    tokenizer = None
    if opts.sft_tokenizer and not opts.init_from:
        tokenizer = out / "tokenizer"
        if not bpe.is_tokenizer_dir(tokenizer):
            texts = [
                chat.render(c).replace(chat.IM_START, "").replace(chat.IM_END, "") for c in convs
            ]
            bpe.save(bpe.train(texts, opts.sft_tokenizer), tokenizer)
    # Rows as short as the conversations: most of a tiny model's step is its output head.
    start = open_or_preset(opts.init_from, opts.preset, weights=False, tokenizer_dir=tokenizer)
    enc = chat.chat_encoding(start.encoding())
    longest = max(len(chat.encode(enc, c)) for c in convs) + 1
    mine = {f.name for f in dataclasses.fields(Options)}
    s = sft.Options(
        **{f.name: getattr(opts, f.name) for f in dataclasses.fields(sft.Options) if f.name in mine}
    )
    s = dataclasses.replace(
        s,
        out=str(out),
        data=str(data),
        template="chatml",
        max_steps=opts.sft_steps,
        batch_size=opts.sft_batch_size,
        lr=opts.sft_lr,
        trainable="all",
        eval_every=opts.sft_steps,
        ckpt_every=opts.sft_steps,
        train_ratio=0.95,
        test_ratio=0.025,
        answer_batch=64,
        max_length=padded_length(longest, start.cfg.context_length, least=16),
        tokenizer=tokenizer and str(tokenizer),
    )
    loop.run(s.loop_config(), sft.Instruct(s))
    return str(out / "model")
