"""The RL task: GRPO on the completions the current policy samples, scored by reward functions in
TRL's form (`gptjax.training.rewards`) over records that carry their answers
(`gptjax.data.prompts`), its options (`python -m train.rl`) and the SFT stage that may come
first."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import jax
import numpy as np
import tyro

from gptjax.config import PRESETS
from gptjax.data import bpe, chat, instruct, prompts
from gptjax.data.lengths import padded_length
from gptjax.data.prompts import Record
from gptjax.files import write_jsonl
from gptjax.inference.engine import Engine
from gptjax.store import Model, open_or_preset
from gptjax.tasks import instruct as sft
from gptjax.tasks.options import LoRAOptions, starting_model
from gptjax.training import grpo, loop, parallel, rewards
from gptjax.training.finetune import lora_config, trainable_paths, with_adapters
from gptjax.training.rollouts import Rollouts
from gptjax.training.task import Task

REWARD = "gptjax.data.gsm8k:correct"


@dataclass(frozen=True)
class Options(LoRAOptions):
    data: str = "arithmetic"
    """records with a prompt (a JSON / JSONL / parquet file or folder, `gsm8k`, or generated
    `arithmetic:n=2000,max_operand=99,ops=+*,seed=0`; see gptjax.data.prompts); their other
    fields go to the rewards"""
    reward: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """module:function in TRL's form, fn(prompts, completions, **columns) -> list[float | None]
    (or fn(prompt, completion) -> float); give it again for several (default: REWARD)"""
    reward_weights: tuple[float, ...] = ()
    """one weight per --reward (default: 1 each); the reward is their weighted sum"""
    preset: Literal[*PRESETS] = "tiny"
    """model size SFT starts from when no --init-from is given"""
    trainable: Literal["all", "lora"] = "all"
    """what trains"""
    group: int = 8
    """completions sampled per prompt (the group its rewards are normalised in)"""
    batch_size: int = 8
    """prompts per rollout (each brings --group completions)"""
    num_iterations: int = 1
    """mu: optimizer updates on each rollout (the clip acts only when > 1, or --minibatches > 1)"""
    minibatches: int = 1
    """slices of a rollout's completions, one update each, per iteration"""
    max_new_tokens: int = 16
    """longest completion"""
    temperature: float = 1.0
    """sampling temperature of the rollouts"""
    top_p: float = 1.0
    """nucleus cut of the rollouts (1: none)"""
    epsilon: float = 0.2
    """lower clip bound of the probability ratio: 1 - epsilon"""
    epsilon_high: float | None = None
    """upper clip bound: 1 + epsilon_high (DAPO's asymmetric clip; default: --epsilon)"""
    clip: float | None = None
    """the same as --epsilon (its earlier name)"""
    kl_beta: float = 0.0
    """weight of the KL penalty to the starting model (0: none)"""
    lr: float = 1e-5
    """learning rate"""
    val_prompts: int = 64
    """held-out prompts (the data's last) answered greedily at each evaluation"""
    eval_every: int = 10
    """steps between evaluations"""
    sft_steps: int = 0
    """first finetune on the records' worked answers for this many steps"""
    sft_lr: float = 1e-3
    """learning rate of the SFT stage"""
    sft_batch_size: int = 32
    """batch of the SFT stage"""
    sft_tokenizer: int = 0
    """SFT of a fresh --preset model: first train a tokenizer of this many tokens on the task's
    text (OUT/sft/tokenizer; 0: GPT-2's). A small vocabulary makes a tiny model's steps fast.
    """

    @property
    def rewards(self) -> tuple[str, ...]:
        return self.reward or (REWARD,)

    @property
    def epsilon_low(self) -> float:
        """The lower clip bound's epsilon: --clip (its earlier name) when given."""
        return self.epsilon if self.clip is None else self.clip


def split(opts: Options) -> tuple[list[Record], list[Record]]:
    """(training, held-out) records: the held-out ones are the data's last --val-prompts."""
    records = prompts.load(opts.data)
    if len(records) <= opts.val_prompts:
        raise ValueError(f"{opts.data}: {len(records)} prompts, not more than --val-prompts")
    return records[: len(records) - opts.val_prompts], records[len(records) - opts.val_prompts :]


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
        self.scorers, self.weights = rewards.load_rewards(opts.rewards, opts.reward_weights)
        train, val = split(opts)
        self.records = {"train": train, "validation": val}
        self.ids = {k: [self.encode(r.messages) for r in v] for k, v in self.records.items()}
        self.train = grpo.PromptRows(len(train))
        self.data = {"train": self.train}
        self.lcfg = lora_config(opts.trainable, opts.lora_rank, opts.lora_alpha, opts.lora_targets)
        self.trainable = trainable_paths(opts.trainable, self.cfg, self.lcfg)
        self.dtype = parallel.compute_dtype(opts.dtype)
        self.kernels = opts.kernels_for(self.dtype)
        rows = opts.batch_size * opts.group
        if rows % (opts.minibatches * jax.process_count()):
            raise ValueError(
                f"--minibatches {opts.minibatches}: must divide each process's {rows} "
                "completions a rollout (--batch-size x --group)"
            )
        window = opts.keep * opts.ckpt_every + opts.num_iterations * opts.minibatches
        self.rollouts = Rollouts(
            self.out / "rollouts", opts.num_iterations, opts.minibatches, opts.seed, window
        )
        self.reuse = self.rollouts.updates
        slots = max(rows, opts.val_prompts)
        self.engine = Engine(self.cfg, self.base, slots=slots, eos_id=self.eos, dtype=self.dtype)
        logp = lambda p, t: grpo.token_logprobs(
            self.cfg, p, t, dtype=self.dtype, kernels=self.kernels
        )
        self.logp = jax.jit(logp)
        self.merge = jax.jit(self.model_params)
        self.ref = jax.device_put(self.base) if opts.kl_beta > 0 else None
        self.sums = ("clip_fraction", "ratio", *(("kl",) if self.ref is not None else ()))
        keys = ("group", "max_new_tokens", "temperature", "top_p", "kl_beta", "num_iterations")
        run = {k: getattr(opts, k) for k in (*keys, "minibatches", "epsilon_high")}
        run |= {"data": opts.data, "lora": opts.trainable, "epsilon": opts.epsilon_low}
        run |= {"rewards": list(opts.rewards), "weights": self.weights.tolist()}
        self.identity = {"task": "rl", "model": self.cfg.to_dict(), "rl": run}
        self.plots = {"reward.png": ("reward", {"reward": "sampled", "val_reward": "val (greedy)"})}

    def encode(self, messages: list[dict]) -> list[int]:
        """A prompt's ids in the model's template, ready for its answer."""
        if self.template == "chatml":
            return chat.encode(self.enc, messages, add_generation_prompt=True)
        return self.enc.encode_ordinary(
            instruct.prompt_text({"instruction": chat.question(messages)})
        )

    def rewards(self, split: str, rows, completions: list[list[int]]) -> tuple[np.ndarray, dict]:
        """Each completion's reward (its end-of-turn token dropped) to the prompts of records
        `rows`, called as TRL calls rewards -> (rewards [n], each reward's mean by name)."""
        records = [self.records[split][r] for r in rows]
        ids = [c[:-1] if c[-1:] == [self.eos] else c for c in completions]
        texts = [self.enc.decode(c) for c in ids]
        # TRL's forms: text for a text prompt, an assistant message for a conversation
        as_message = lambda t: [{"role": "assistant", "content": t}]
        answers = [
            t if isinstance(r.prompt, str) else as_message(t)
            for r, t in zip(records, texts, strict=True)
        ]
        return rewards.score(
            self.scorers,
            self.weights,
            [r.prompt for r in records],
            answers,
            prompts.columns(records),
            completion_ids=ids,
        )

    def rollout(self, params, batch: dict, step: int) -> tuple[dict, dict]:
        return self.rollouts.batch(step, lambda: self.sample(params, batch, step))

    def sample(self, params, batch: dict, step: int) -> tuple[dict, dict]:
        """A rollout: --group completions of each prompt of `batch`, their rewards and
        advantages, and (when it serves several updates) the sampling policy's log-probs."""
        opts, G = self.opts, self.opts.group
        rows = np.repeat(batch["row"], G)
        policy = self.merge(params)
        self.engine.set_params(policy)
        asked = [self.ids["train"][r] for r in rows]
        seeds = np.random.SeedSequence([opts.seed, step]).generate_state(len(rows)) >> 1
        completions = self.engine.complete(
            asked,
            max_tokens=opts.max_new_tokens,
            seeds=[int(s) for s in seeds],
            temperature=opts.temperature,
            top_p=opts.top_p,
        )
        scores, means = self.rewards("train", rows, completions)
        tokens, mask = grpo.pack(asked, completions, self.enc.eot_token, self.cfg.context_length)
        out = {
            "tokens": tokens,
            "mask": mask,
            "advantages": grpo.group_advantages(scores.reshape(-1, G)).reshape(-1),
        }
        if self.reuse > 1:  # with one update the ratio is exactly 1: no forward pass for it
            out["old_logp"] = np.asarray(self.logp(policy, tokens))
        if self.ref is not None:
            out["ref_logp"] = np.asarray(self.logp(self.ref, tokens))
        figures = {"reward": float(scores.mean()), "reward_std": float(scores.std()), **means}
        figures["completion_tokens"] = float(np.mean([len(c) for c in completions]))
        return out, figures

    def loss_fn(self, params, batch, rng, train):
        logp = grpo.token_logprobs(
            self.cfg,
            self.model_params(params),
            batch["tokens"],
            dtype=self.dtype,
            kernels=self.kernels,
        )
        return grpo.clipped_loss(
            logp,
            batch.get("old_logp"),
            batch["advantages"],
            batch["mask"],
            epsilon=self.opts.epsilon_low,
            epsilon_high=self.opts.epsilon_high,
            kl_beta=self.opts.kl_beta,
            ref_logp=batch.get("ref_logp"),
        )

    def evaluate(self, params, step: int) -> tuple[dict, str]:
        """The mean reward of greedy answers to the held-out prompts."""
        self.engine.set_params(self.merge(params))
        asked = self.ids["validation"]
        answers = self.engine.complete(
            asked, max_tokens=self.opts.max_new_tokens, seeds=[0] * len(asked), temperature=0.0
        )
        scores, means = self.rewards("validation", range(len(asked)), answers)
        reward = float(scores.mean())
        line = f"step {step}: val reward {reward:.3f} (greedy, {len(asked)} prompts)"
        return {"val_reward": reward} | {f"val_{k}": v for k, v in means.items()}, line

    def init_params(self):
        return with_adapters(self.base, self.lcfg, jax.random.key(self.opts.seed))

    def describe(self, params) -> str:
        o = self.opts
        said = f"{super().describe(params)}; {o.group} completions a prompt"
        terms = zip(self.weights, o.rewards, strict=True)
        said += f", reward {' + '.join(f'{w:g} x {p}' for w, p in terms)}"
        if self.reuse == 1:
            return said + "; one update a rollout (the ratio is 1: nothing to clip)"
        return said + f"; {o.num_iterations} iterations x {o.minibatches} minibatches a rollout"

    def final_model(self, params) -> Model:
        p = self.model_params(params)
        return Model(self.cfg, p, task=self.start.task, tokenizer=self.start.tokenizer)


def sft_stage(opts: Options) -> str:
    """Finetune on the training records' worked answers (train.instruct, ChatML) in OUT/sft;
    -> the model RL starts from."""
    train, _ = split(opts)
    missing = next((i for i, r in enumerate(train) if r.answer is None), None)
    if missing is not None:
        raise ValueError(
            f"--sft-steps: {opts.data}: record {missing} has no worked answer (GSM8K's "
            '"answer", a "completion", or an assistant turn after the prompt)'
        )
    convs = [[*r.messages, {"role": "assistant", "content": r.answer}] for r in train]
    out = Path(opts.out) / "sft"
    data = out / "data.jsonl"
    if not data.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(data, ({"messages": c} for c in convs))
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
