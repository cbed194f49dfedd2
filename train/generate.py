"""Generate text from a GPT-2, streaming tokens as they are produced.

    python -m train.generate --prompt "Every effort moves you" --max-new-tokens 50

prints the prompt, then each new token as it is decoded (random weights from `--preset` until a
`--ckpt` is given: a gptjax checkpoint or a Hugging Face GPT-2 folder), then one line on stderr
with the tokens/s. With `--instruction "..." [--input "..."]` the prompt is the Alpaca template
of instruction-tuned models (`python -m train.instruct`) and only the response is printed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp

# An entry point, not a library module: it opens any folder `convert` reads (HF, OpenAI).
from convert.load import load_model
from gptjax.config import PRESETS, GPTConfig
from gptjax.data import instruct, tokenizer
from gptjax.inference import generation
from gptjax.model.gpt import init_params
from gptjax.options import parse, run_cli


@dataclass(frozen=True)
class Options:
    prompt: str = "Every effort moves you"
    """text to continue"""
    max_new_tokens: int = 50
    """tokens to generate"""
    ckpt: str | None = None
    """checkpoint or Hugging Face folder (unset: random weights)"""
    preset: Literal[*PRESETS] = "tiny"
    """model size when no --ckpt is given"""
    temperature: float = 0.0
    """0 is greedy; otherwise softmax temperature"""
    top_k: int | None = None
    """sample only from the k most likely tokens"""
    top_p: float | None = None
    """sample only from the smallest set with this probability"""
    seed: int = 0
    """random seed for weights and sampling"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """compute dtype"""
    stop_at_eos: bool = True
    """stop when the model emits <|endoftext|>"""
    instruction: str | None = None
    """ask an instruction-tuned model (replaces --prompt)"""
    input: str = ""
    """the instruction's input, if any"""


def load(opts: Options) -> tuple[GPTConfig, dict]:
    if opts.ckpt is not None:
        return load_model(opts.ckpt)
    cfg = GPTConfig.preset(opts.preset)
    return cfg, init_params(cfg, jax.random.key(opts.seed))


def stream(opts: Options, cfg: GPTConfig, params, enc) -> int:
    """Decode token by token, writing each token's text to stdout; return the count."""
    text = opts.prompt
    if opts.instruction is not None:
        entry = {"instruction": opts.instruction, "input": opts.input}
        text = instruct.format_prompt(entry) + instruct.RESPONSE
    prompt = generation.prepare_prompt(cfg, enc.encode(text), opts.max_new_tokens)
    sampling = generation.check_sampling(cfg, opts.temperature, opts.top_k, opts.top_p)
    eos = tokenizer.EOT_ID if opts.stop_at_eos and cfg.vocab_size > tokenizer.EOT_ID else -1
    dtype = jnp.dtype(opts.dtype)
    temperature, top_p = jnp.float32(opts.temperature or 1.0), jnp.float32(opts.top_p or 1.0)
    total = prompt.shape[1] + opts.max_new_tokens
    keys = generation.row_keys(jax.random.key(opts.seed), 1)
    state = generation.prefill(cfg, params, prompt, keys, jnp.int32(eos), total=total, dtype=dtype)
    text = tokenizer.Detokenizer(enc)
    if opts.instruction is None:  # an instruction's answer is printed alone
        sys.stdout.write(enc.decode(prompt[0].tolist()))
    for n in range(opts.max_new_tokens):
        pos = int(state.pos)
        state = generation.decode_step(
            cfg, params, state, temperature, top_p, jnp.int32(eos), sampling=sampling, dtype=dtype
        )
        tok = int(state.tokens[0, pos])
        if tok == eos:
            return n + 1
        sys.stdout.write(text.push(tok)[0])
        sys.stdout.flush()
    return opts.max_new_tokens


def has_bpe(folder: str) -> bool:
    """Converted checkpoints carry their tokenizer files."""
    return all((Path(folder) / name).is_file() for name in ("encoder.json", "vocab.bpe"))


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    cfg, params = load(opts)
    params = jax.device_put(params)
    enc = tokenizer.gpt2(opts.ckpt) if opts.ckpt and has_bpe(opts.ckpt) else tokenizer.gpt2()
    tokenizer.check_vocab(cfg.vocab_size, opts.ckpt or f"preset {opts.preset}")
    start = time.perf_counter()
    n = stream(opts, cfg, params, enc)
    seconds = time.perf_counter() - start
    print(file=sys.stdout)
    print(f"[{n} tokens in {seconds:.2f}s, {n / seconds:.1f} tok/s incl. compile]", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
