"""The instruction-finetuning task (the book's chapter 7; ChatML conversations too), its options
(`python -m train.instruct`) and the answers to the test split it writes at the end."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax

from gptjax.config import PRESETS, GPTConfig
from gptjax.data import chat, instruct
from gptjax.files import write_json
from gptjax.inference.generation import complete_all
from gptjax.model.params import grow_vocab, init_params
from gptjax.store import Model
from gptjax.tasks.options import Harness, HarnessOptions, LoRAOptions, starting_model
from gptjax.training import parallel
from gptjax.training.evaluator import Evaluator
from gptjax.training.finetune import lora_config, trainable_paths, with_adapters
from gptjax.training.steps import loss_sum, make_eval_step
from gptjax.training.task import LOSS_PLOT, Task


@dataclass(frozen=True)
class Options(LoRAOptions, HarnessOptions):
    data: str = "instruction-data"
    """instruction-data, or a JSON/JSONL list of records (chatml: JSONL of {"messages": ...})"""
    template: Literal[*chat.TEMPLATES] = "alpaca"
    """alpaca: the book's instruction records; chatml: multi-turn conversations"""
    preset: Literal[*PRESETS] = "355M"
    """model size when no --init-from is given"""
    tokenizer: str | None = None
    """a tokenizer folder (python -m train.tokenizer) a fresh --preset model is sized for (unset:
    GPT-2's, or --init-from's own)
    """
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


class Instruct(Task):
    """Next-token loss on Alpaca-formatted records."""

    def __init__(self, opts: Options):
        self.opts, self.out, self.chat = opts, Path(opts.out), opts.template == "chatml"
        records = (chat.load_conversations if self.chat else instruct.load_entries)(opts.data)
        self.splits = instruct.split(records, opts.train_ratio, opts.test_ratio)
        start = starting_model(opts.init_from, opts.preset, opts.drop_rate, opts.tokenizer)
        cfg, self.base, self.enc = start.cfg, start.params, start.encoding()
        self.tokenizer, grown = start.tokenizer, None
        if self.chat:
            self.enc = self.tokenizer = chat.chat_encoding(self.enc)
            if self.enc.n_vocab > cfg.vocab_size:
                grown = {"from": cfg.vocab_size, "to": self.enc.n_vocab, "tokens": chat.TOKENS}
                cfg, self.base = self.grown(cfg, self.base, self.enc.n_vocab)
        self.cfg = cfg
        self.task = (
            (chat.TASK | ({"grown": grown} if grown else {})) if self.chat else instruct.TASK
        )
        L = cfg.fit(opts.max_length, "--max-length")
        self.data = {s: self.sequences(entries, L) for s, entries in self.splits.items()}
        self.train = self.data["train"]
        self.lcfg = lora_config(opts.trainable, opts.lora_rank, opts.lora_alpha, opts.lora_targets)
        self.trainable = trainable_paths(opts.trainable, cfg, self.lcfg)
        run = {
            "trainable": opts.trainable,
            "mask_instruction": opts.mask_instruction,
            "lora": self.lcfg and dataclasses.asdict(self.lcfg),
            "max_length": L,
            "template": opts.template,
            "grown": grown,
        }
        self.identity = {"task": "instruct", "model": cfg.to_dict(), "instruct": run}
        self.dtype = parallel.compute_dtype(opts.dtype)
        self.kernels = opts.kernels_for(self.dtype)
        step = make_eval_step(cfg, dtype=self.dtype, kernels=self.kernels)
        self.evaluator = Evaluator(
            lambda p, b: step(self.model_params(p), b),
            parallel.make_mesh(),
            opts.batch_size,
            opts.eval_batches,
        )
        self.harness = Harness(cfg, opts, self.enc)
        self.plots = LOSS_PLOT | self.harness.plots

    @staticmethod
    def grown(cfg: GPTConfig, params, V: int):
        """(cfg, params) with V rows of embeddings (params None: drawn later at V)."""
        if params is None:
            return dataclasses.replace(cfg, vocab_size=V), None
        return grow_vocab(cfg, params, V)

    def sequences(self, entries: list, L: int) -> instruct.Sequences:
        eot = self.enc.eot_token
        if self.chat:
            pairs = [chat.encode_with_mask(self.enc, m) for m in entries]
            return instruct.Sequences(
                [p[0] for p in pairs], L, masks=[p[1] for p in pairs], pad_id=eot
            )
        encode = self.enc.encode_ordinary
        tokens = [encode(instruct.training_text(e)) for e in entries]
        prompts = None
        if self.opts.mask_instruction:
            prompts = [len(encode(instruct.format_prompt(e))) for e in entries]
        return instruct.Sequences(tokens, L, prompts, pad_id=eot)

    def loss_fn(self, params, batch, rng, train):
        params = self.model_params(params)
        dtype, kernels = self.dtype, self.kernels
        return loss_sum(params, self.cfg, batch, rng, train=train, dtype=dtype, kernels=kernels)

    def init_params(self):
        key = jax.random.key(self.opts.seed)
        base = self.base if self.base is not None else init_params(self.cfg, key)
        return with_adapters(base, self.lcfg, jax.random.fold_in(key, 1))

    def describe(self, params) -> str:
        buckets = self.train.buckets(self.opts.batch_size, seed=self.opts.seed)
        return (
            f"{super().describe(params)} ({self.opts.trainable}); an epoch compiles "
            f"{len(buckets)} step programs, batches per length {buckets}"
        )

    def final_model(self, params) -> Model:
        params = self.model_params(params)
        return Model(self.cfg, params, task=self.task, tokenizer=self.tokenizer)

    def finish(self, params) -> Model:
        """The model, then its answers to the test split (OUT/test-responses.json)."""
        model = super().finish(params)
        if jax.process_index() == 0:
            opts, entries = self.opts, self.splits["test"]
            path = self.out / "test-responses.json"
            batch, most = opts.answer_batch, opts.max_new_tokens
            write_answers(model, entries, path, batch, most, opts.progress)
        return model


def answer(model: Model, entries: list, *, batch: int, max_new_tokens: int, progress=True):
    """The model's response to each entry (an Alpaca record, or a conversation whose last turn
    is answered in ChatML), `batch` prompts at a time (greedy, stopping at the template's end
    token), with a progress bar."""
    cfg, enc, template = model.cfg, model.encoding(), chat.template_of(model.task)
    params = jax.device_put(model.params)  # on the devices once, not per batch
    if template == "chatml":
        prompts = [chat.encode(enc, reply_to(e), add_generation_prompt=True) for e in entries]
    else:
        prompts = [enc.encode_ordinary(instruct.prompt_text(e)) for e in entries]
    # One answer length for the whole run, so every batch reuses the same few programs; a model
    # with a short context answers at least a quarter of it, cutting the longest prompts.
    room = cfg.context_length - max(len(p) for p in prompts)
    n = min(max_new_tokens, max(room, cfg.context_length // 4))
    eos = chat.end_id(enc, template)
    new = complete_all(
        cfg, params, prompts, max_new_tokens=n, batch=batch, eos_id=eos, progress=progress
    )
    if template == "chatml":
        return [enc.decode([t for t in tokens if t != eos]).strip() for tokens in new]
    return [instruct.response_of(enc.decode(tokens)) for tokens in new]


def reply_to(messages: list[dict]) -> list[dict]:
    """A conversation up to (not including) its last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]


def write_answers(
    model: Model, entries, path: Path, batch: int, max_new_tokens: int, progress: bool = True
) -> None:
    start = time.perf_counter()
    responses = answer(
        model, entries, batch=batch, max_new_tokens=max_new_tokens, progress=progress
    )
    seconds = time.perf_counter() - start
    rows = [as_record(e) | {"model_response": r} for e, r in zip(entries, responses, strict=True)]
    write_json(path, rows)
    print(f"answered {len(rows)} test prompts in {seconds:.1f} s ({batch} at a time): {path}")


def as_record(entry) -> dict:
    """A test entry as test-responses.json holds it: a conversation as its messages up to the
    answered turn, the expected answer as `output`."""
    if isinstance(entry, dict):
        return dict(entry)
    last = reply_to(entry)
    return {"messages": last, "output": entry[len(last)]["content"]}
