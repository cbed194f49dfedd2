"""Finetune GPT-2 to follow instructions (the book's chapter 7), then answer the test split.

    python -m train.instruct --init-from runs/gpt2-355M --data instruction-data --out runs/instruct
    python -m train.instruct --preset tiny --max-steps 40 --out runs/instruct-tiny
    python -m train.instruct answer --ckpt runs/instruct [--answer-batch 8]

Training prints the trainable parameter count and the step programs an epoch compiles (one per
bucket length), a progress bar and train/val loss at each evaluation; at the end it answers the
test split in batches (greedy, up to --max-new-tokens, stopping at <|endoftext|>) and writes
OUT/test-responses.json (each test entry with its `model_response`), OUT/metrics.jsonl,
OUT/loss.png, checkpoints (rerun to continue) and the model in OUT/model (LoRA merged; adapters in
OUT/peft). Score the answers with `python -m train.judge OUT/test-responses.json`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from tqdm import tqdm

from convert.load import load_model
from convert.peft import to_peft
from gptjax import generate
from gptjax.config import PRESETS, GPTConfig
from gptjax.data import instruct, tokenizer
from gptjax.eval.evaluator import Evaluator
from gptjax.files import write_json
from gptjax.inference.generation import completion
from gptjax.model.gpt import init_params
from gptjax.options import parse, run_cli
from gptjax.training import parallel
from gptjax.training.checkpoint import save_model
from gptjax.training.finetune import counts, lora_config, merged, trainable_paths, with_adapters
from gptjax.training.steps import loss_sum, make_eval_step
from train.options import Harness, HarnessOptions, LoRAOptions, script_main, starting_model

TASK = {"kind": "instruct", "template": "alpaca"}


@dataclass(frozen=True)
class Options(LoRAOptions, HarnessOptions):
    data: str = "instruction-data"
    """instruction-data, or a JSON/JSONL list of records"""
    preset: Literal[*PRESETS] = "355M"
    """model size when no --init-from is given"""
    trainable: Literal["all", "lora"] = "all"
    """what trains"""
    mask_instruction: bool = False
    """train on the responses only (the book's ex. 7.2)"""
    max_length: int | None = None
    """tokens per example (unset: the context)"""
    train_ratio: float = 0.85
    """leading fraction of the records for training"""
    test_ratio: float = 0.1
    """the next fraction for testing; the rest validates"""
    max_new_tokens: int = 256
    """longest answer to the test split"""
    answer_batch: int = 8
    """test prompts answered together"""
    # The book's recipe (AdamW 5e-5, weight decay 0.1, batch 8) for 2 epochs, eval every 5.
    epochs: int = 2
    """passes over the training records when --max-steps is not given"""
    eval_every: int = 5
    """steps between evaluations"""


class Instruct:
    """Next-token loss on Alpaca-formatted records (the loop's `Task`)."""

    def __init__(self, opts: Options):
        self.opts, self.enc = opts, tokenizer.gpt2()
        self.splits = instruct.split(
            instruct.load_entries(opts.data), opts.train_ratio, opts.test_ratio
        )
        cfg, self.base = starting_model(opts.init_from, opts.preset, opts.drop_rate)
        self.cfg = cfg
        L = opts.max_length or cfg.context_length
        if cfg.context_length < L:
            raise ValueError(f"--max-length {L} exceeds the model's context ({cfg.context_length})")
        self.data = {s: self.sequences(entries, L) for s, entries in self.splits.items()}
        self.train = self.data["train"]
        self.lcfg = lora_config(opts.trainable, opts.lora_rank, opts.lora_alpha, opts.lora_targets)
        self.trainable = trainable_paths(opts.trainable, cfg, self.lcfg)
        run = {
            "trainable": opts.trainable,
            "mask_instruction": opts.mask_instruction,
            "lora": self.lcfg and dataclasses.asdict(self.lcfg),
            "max_length": L,
        }
        self.identity = {"task": "instruct", "model": cfg.to_dict(), "instruct": run}
        self.seen = ("examples_seen", 1)
        self.plots = {
            "loss.png": ("cross entropy", {"train_loss": "train loss", "val_loss": "val loss"})
        }
        self.dtype = parallel.compute_dtype(opts.dtype)
        step = make_eval_step(cfg, dtype=self.dtype)
        self.evaluator = Evaluator(
            lambda p, b: step(self.merged(p), b),
            parallel.make_mesh(),
            opts.batch_size,
            opts.eval_batches,
        )
        self.harness = Harness(cfg, opts, self.plots)

    def sequences(self, entries: list[dict], L: int) -> instruct.Sequences:
        encode = self.enc.encode_ordinary
        tokens = [encode(instruct.training_text(e)) for e in entries]
        prompts = None
        if self.opts.mask_instruction:
            prompts = [len(encode(instruct.format_prompt(e))) for e in entries]
        return instruct.Sequences(tokens, L, prompts)

    def merged(self, params):
        return merged(params, self.lcfg)

    def loss_fn(self, params, batch, rng, train):
        return loss_sum(self.merged(params), self.cfg, batch, rng, train=train, dtype=self.dtype)

    def init_params(self):
        key = jax.random.key(self.opts.seed)
        base = self.base if self.base is not None else init_params(self.cfg, key)
        return with_adapters(base, self.lcfg, jax.random.fold_in(key, 1))

    def abstract_params(self):
        return jax.eval_shape(self.init_params)

    def describe(self, params) -> str:
        trained, total = counts(params, self.trainable, self.lcfg)
        buckets = self.train.buckets(self.opts.batch_size, seed=self.opts.seed)
        return (
            f"trainable parameters: {trained:,} of {total:,} ({self.opts.trainable}); an "
            f"epoch compiles {len(buckets)} step programs, batches per length "
            f"{buckets}"
        )

    def loss(self, params, data) -> float:
        sums = self.evaluator.sums(params, data)
        return sums["loss_sum"] / sums["tokens"]

    def evaluate(self, params, step: int) -> tuple[dict, str]:
        tl, vl = self.loss(params, self.train), self.loss(params, self.data["validation"])
        scores, more = self.harness(self.merged(params), step)
        line = f"step {step}: train loss {tl:.3f}, val loss {vl:.3f}"
        return {"eval_train_loss": tl, "val_loss": vl, **scores}, line + more

    def finish(self, params) -> None:
        own = jax.tree.map(np.asarray, self.merged(params))
        if jax.process_index() != 0:
            return
        out = Path(self.opts.out)
        save_model(out / "model", self.cfg, own, task=TASK)
        if self.lcfg is not None:
            to_peft(self.lcfg, jax.tree.map(np.asarray, params["lora"]), out / "peft")
        write_answers(
            self.cfg,
            own,
            self.splits["test"],
            out / "test-responses.json",
            self.opts.answer_batch,
            self.opts.max_new_tokens,
            self.opts.progress,
        )


def answer(
    cfg: GPTConfig,
    params,
    entries: list[dict],
    *,
    batch: int,
    max_new_tokens: int,
    progress: bool = True,
):
    """The model's response to each entry, `batch` prompts at a time (greedy, stopping at
    <|endoftext|>), with a progress bar."""
    enc = tokenizer.gpt2()
    prompts = [enc.encode_ordinary(instruct.format_prompt(e) + instruct.RESPONSE) for e in entries]
    # One answer length for the whole run, so every batch reuses the same few programs; a model
    # with a short context answers at least a quarter of it, cutting the longest prompts.
    room = cfg.context_length - max(len(p) for p in prompts)
    n = min(max_new_tokens, max(room, cfg.context_length // 4))
    responses = []
    bar = tqdm(range(0, len(prompts), batch), desc="answering", unit="batch", disable=not progress)
    for start in bar:
        chunk = prompts[start : start + batch]
        # A short last batch is filled up with copies, keeping the batch shape (and program).
        out = generate(
            cfg,
            params,
            chunk + [chunk[-1]] * (batch - len(chunk)),
            max_new_tokens=n,
            eos_id=tokenizer.EOT_ID,
        )
        for row in out[: len(chunk)]:
            new = completion(row, n, tokenizer.EOT_ID)
            responses.append(instruct.response_of(enc.decode(new)))
    return responses


def write_answers(
    cfg, params, entries, path: Path, batch: int, max_new_tokens: int, progress: bool = True
) -> None:
    start = time.perf_counter()
    responses = answer(
        cfg, params, entries, batch=batch, max_new_tokens=max_new_tokens, progress=progress
    )
    seconds = time.perf_counter() - start
    rows = [{**e, "model_response": r} for e, r in zip(entries, responses, strict=True)]
    write_json(path, rows)
    print(f"answered {len(rows)} test prompts in {seconds:.1f} s ({batch} at a time): {path}")


@dataclass(frozen=True)
class Answer:
    ckpt: str = "runs/default"
    """an instruct run or an instruction-tuned model folder"""
    data: str = "instruction-data"
    """records whose test split is answered"""
    train_ratio: float = 0.85
    """as in training: records before the test split"""
    test_ratio: float = 0.1
    """as in training: the test split's fraction"""
    answer_batch: int = 8
    """prompts answered together"""
    max_new_tokens: int = 256
    """longest answer"""
    out: str | None = None
    """output file (unset: test-responses.json beside the run)"""


def answer_main(argv) -> None:
    opts = parse(Answer, argv, "answer the test split with a trained model")
    run = Path(opts.ckpt)
    cfg, params = load_model(run)
    entries = instruct.split(instruct.load_entries(opts.data), opts.train_ratio, opts.test_ratio)[
        "test"
    ]
    out = Path(opts.out) if opts.out else run / "test-responses.json"
    write_answers(cfg, jax.device_put(params), entries, out, opts.answer_batch, opts.max_new_tokens)


def main(argv=None) -> None:
    script_main(Options, Instruct, argv, __doc__, commands={"answer": answer_main})


if __name__ == "__main__":
    run_cli(main)
