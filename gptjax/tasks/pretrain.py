"""The pretraining task: next-token prediction on windows of a text corpus or llm.c shards, its
options (`python -m train.pretrain`, recipes) and the corpus and model it starts from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import numpy as np

from gptjax import generate
from gptjax.config import CHOICES, GPT2_ARCH, PRESETS, GPTConfig
from gptjax.data import bpe
from gptjax.data.corpus import Windows, load_tokens, split_documents
from gptjax.data.shards import is_shard_dir, shard_windows
from gptjax.data.tokenizer import EOT_ID
from gptjax.eval.hellaswag import HellaSwag
from gptjax.kernels.policy import ATTENTION
from gptjax.model.gpt import REMAT
from gptjax.model.params import INITS, abstract_params, count_params, init_params
from gptjax.tasks.options import (
    Harness,
    HarnessOptions,
    RunOptions,
    check_multiple,
    starting_model,
)
from gptjax.training import parallel
from gptjax.training.cross_entropy import ce_chunks_for
from gptjax.training.evaluator import Evaluator
from gptjax.training.flops import flops_per_token
from gptjax.training.parallel import DTYPES
from gptjax.training.steps import bits_per_byte, lm_loss, make_eval_step, perplexity
from gptjax.training.task import LOSS_PLOT, Task


@dataclass(frozen=True)
class Options(RunOptions, HarnessOptions):
    data: str = "the-verdict"
    """named dataset, a .txt / .jsonl(.gz) / .parquet file, a folder of them, or a folder of
    llm.c .bin shards (python -m train.prepare)
    """
    text_field: str = "text"
    """field or column holding the text (.jsonl, .parquet)"""
    preset: Literal[*PRESETS] = "tiny"
    """model size"""
    tokenizer: str | None = None
    """a tokenizer folder (python -m train.tokenizer; unset: GPT-2's, or the one a shard
    folder was prepared with)
    """
    context_length: int | None = None
    """tokens per window (unset: the preset's)"""
    init: Literal[*INITS] = "gpt2"
    """initialisation of a --preset model"""
    qkv_bias: bool = True
    """biases on the q/k/v projection (GPT-2 has them; the book's chapter 5 has not)"""
    tie_embeddings: bool = True
    """output head shares wte (as GPT-2; the book's chapter 5 unties it)"""
    position: Literal[*CHOICES["position"]] = "learned"
    """positions: GPT-2's learned wpe, or rotary (RoPE) on queries and keys"""
    rope_base: float = 10000.0
    """rotary: base of the angles"""
    norm: Literal[*CHOICES["norm"]] = "layernorm"
    """normalisation: GPT-2's LayerNorm, or RMSNorm"""
    qk_norm: bool = False
    """RMS-normalise queries and keys in each head"""
    activation: Literal[*CHOICES["activation"]] = "gelu"
    """MLP activation: GPT-2's GELU, or relu2 (ReLU squared)"""
    logit_softcap: float | None = None
    """soft cap c on the logits, c tanh(z / c) (unset: none, as GPT-2)"""
    window: int | None = None
    """sliding-window attention: each query sees its last WINDOW keys (unset: all)"""
    doc_mask: bool = False
    """attend only within each token's own document (boundaries at <|endoftext|>)"""
    align_docs: bool = False
    """training windows start where documents do (at each <|endoftext|>: each document is cut
    into windows from there)
    """
    drop_rate: float = 0.1
    """dropout rate (0, as nanoGPT: fused attention on GPUs)"""
    dtype: Literal[*DTYPES] = "auto"
    """compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU)"""
    attention: Literal[*ATTENTION] = "auto"
    """attention kernel (auto: cuDNN on GPU in bf16, Pallas flash on TPU, the bf16 kernel on
    an AMX CPU in bf16, else reference); the same as --kernels attention=...
    """
    remat: Literal[*REMAT] = "none"
    """recompute block activations in the backward pass (block: all, dots: all but matmul
    outputs)
    """
    ce_chunks: int = 0
    """slices of T for the cross entropy (0: as few as keep each slice's logits within the
    kernel policy's ce_budget: 1 GiB, 32 MiB for bf16 on an AMX CPU)
    """
    train_ratio: float = 0.9
    """leading fraction of the tokens used for training"""
    prompt: str = "Every effort moves you"
    """prompt for the eval samples"""
    sample_tokens: int = 30
    """tokens per eval sample"""
    hellaswag_every: int = 0
    """steps between HellaSwag evals (a multiple of --eval-every)"""
    hellaswag_limit: int | None = None
    """HellaSwag examples per eval (unset: all)"""
    hellaswag_data: str | None = None
    """HellaSwag .jsonl (unset: validation, cached)"""


def corpus(
    data: str, T: int, train_ratio: float, align: bool = False, enc=None, text_field="text"
) -> tuple:
    """(train, val) windows of T tokens: a folder of llm.c shards brings its own val shard;
    text (`text_field` of records) is tokenized once by `enc` (None: GPT-2's; cached) and
    split at the document start nearest train_ratio. `align`: training windows start at
    document starts."""
    eot = enc.eot_token if enc is not None else EOT_ID
    if is_shard_dir(data):
        return shard_windows(data, T, align, eot)
    progress = jax.process_index() == 0
    tokens = load_tokens(data, progress=progress, enc=enc, text_field=text_field)
    train_tok, val_tok = split_documents(tokens, train_ratio, eot)
    return (
        Windows(train_tok, T, T, name=f"{data} (train split)", align=align, eot=eot),
        Windows(val_tok, T, T, name=f"{data} (validation split)", eot=eot),
    )


def tokenizer_dir(opts: Options) -> str | None:
    """--tokenizer, else the tokenizer a shard folder was prepared with (train.prepare records
    it in the folder); a shard folder of another tokenizer is refused."""
    shards = Path(opts.data) / "tokenizer" if is_shard_dir(opts.data) else None
    recorded = shards if shards is not None and bpe.is_tokenizer_dir(shards) else None
    if opts.tokenizer and recorded is not None:
        mine, theirs = bpe.load(opts.tokenizer), bpe.load(recorded)
        if bpe.fingerprint(mine) != bpe.fingerprint(theirs):
            raise ValueError(
                f"--tokenizer {opts.tokenizer}: {opts.data} was prepared with another tokenizer "
                f"({recorded}); leave --tokenizer out or prepare the shards again"
            )
    return opts.tokenizer or (str(recorded) if recorded is not None else None)


def model_config(opts: Options) -> tuple[GPTConfig, dict | None]:
    # Only a switch away from GPT-2 shapes a model differently from its preset.
    arch = {k: getattr(opts, k) for k, v in GPT2_ARCH.items() if getattr(opts, k) != v}
    if opts.position == "rotary":
        arch["rope_base"] = opts.rope_base
    if opts.init_from and (arch or opts.init != "gpt2"):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in arch) or "--init"
        raise ValueError(f"{flags} shape(s) a --preset model; --init-from brings its own weights")
    if opts.context_length and not opts.init_from:
        arch["context_length"] = opts.context_length
    return starting_model(opts.init_from, opts.preset, opts.drop_rate, tokenizer_dir(opts), **arch)


class Pretrain(Task):
    """Next-token prediction on windows of a text corpus."""

    def __init__(self, opts: Options):
        start = model_config(opts)
        cfg, self.params, self.enc = start.cfg, start.params, start.encoding()
        T = cfg.fit(opts.context_length, "--context-length")
        own = start.tokenizer  # None: GPT-2's
        self.train, val = corpus(
            opts.data, T, opts.train_ratio, opts.align_docs, own, opts.text_field
        )
        self.data = {"train": self.train, "validation": val}
        self.opts, self.cfg, self.out = opts, cfg, Path(opts.out)
        self.identity = {"model": cfg.to_dict()}
        if own is not None:
            self.identity["tokenizer"] = bpe.fingerprint(own)
            if jax.process_index() == 0:  # the run's copy; a resume finds it there
                bpe.keep(own, self.out / "tokenizer", context=cfg.context_length)
        rows = max(1, opts.batch_size // opts.grad_accum // jax.device_count())  # per device
        dtype = parallel.compute_dtype(opts.dtype)
        self.kernels = kernels = opts.kernels_for(dtype)
        budget = kernels.ce_budget
        chunks = opts.ce_chunks or ce_chunks_for(rows, T, cfg.vocab_size, cfg.emb_dim, budget)
        compute = dict(
            dtype=dtype,
            kernels=kernels,
            ce_chunks=chunks,
            doc_mask=opts.doc_mask,
            eot=self.enc.eot_token,
        )
        self.loss_fn = lm_loss(cfg, remat=opts.remat, **compute)
        self.seen = ("tokens_seen", T)
        self.flops_per_token = flops_per_token(cfg, T)  # for MFU on GPUs and TPUs
        self.harness = Harness(cfg, opts, self.enc)
        hellaswag = (
            "HellaSwag accuracy",
            {"hellaswag_acc_norm": "acc_norm", "hellaswag_acc": "acc"},
        )
        self.plots = {"loss.png": [LOSS_PLOT["loss.png"], hellaswag], **self.harness.plots}
        sizes = bpe.token_bytes(self.enc, cfg.vocab_size)
        self.evaluator = Evaluator(
            make_eval_step(cfg, token_bytes=sizes, **compute),
            parallel.make_mesh(),
            opts.batch_size,
            opts.eval_batches,
        )
        self.prompt = [self.enc.encode(opts.prompt)]  # tokenized once, not at every eval
        self.hellaswag = None
        if opts.hellaswag_every:
            check_multiple("--hellaswag-every", opts.hellaswag_every, opts.eval_every)
            self.hellaswag = HellaSwag(
                cfg,
                opts.hellaswag_data,
                opts.hellaswag_limit,
                opts.batch_size,
                opts.dtype,
                self.enc,
            )

    def init_params(self):
        if self.params is not None:
            return self.params
        return init_params(self.cfg, jax.random.key(self.opts.seed), init=self.opts.init)

    def abstract_params(self):
        return abstract_params(self.cfg)

    def report(self, params, step: int, metrics: dict) -> tuple[dict, str]:
        """The validation perplexity, a greedy sample of --prompt and HellaSwag when due."""
        ids = generate(self.cfg, params, self.prompt, max_new_tokens=self.opts.sample_tokens)
        text = self.enc.decode(np.asarray(ids[0]).tolist())
        # TensorBoard and W&B show the sample as text.
        more = {
            "val_perplexity": perplexity(metrics["val_loss"]),
            "val_bpb": bits_per_byte(metrics["val_loss"], metrics["val_bytes_per_token"]),
            "sample": text,
        }
        line = f", val bpb {more['val_bpb']:.3f} | {text!r}"
        if self.hellaswag is not None and step % self.opts.hellaswag_every == 0:
            scores = self.hellaswag.scores(params)
            more |= {f"hellaswag_{k}": v for k, v in scores.items()}
            line += f"\n  hellaswag acc_norm {scores['acc_norm']:.4f}, acc {scores['acc']:.4f}"
        return more, line

    def describe(self, params) -> str:
        return f"parameters: {count_params(params):,} ({self.cfg})"
