"""Generate text from a GPT-2, streaming tokens as they are produced.

    python -m train.generate --prompt "Every effort moves you" --max-new-tokens 50

prints the prompt, then each new token as it is decoded (random weights from `--preset` until a
`--ckpt` is given: a gptjax checkpoint or a Hugging Face GPT-2 folder), then one line on stderr
with the tokens/s. With `--instruction "..." [--input "..."]` the prompt is the template an
instruction-tuned model (`python -m train.instruct`) was tuned on (Alpaca, or a ChatML user
turn) and only the response is printed. `--weights bf16|int8` decodes from narrow weights
(`gptjax.model.weights`): fewer bytes a token, so faster where memory bandwidth bounds it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from gptjax import heap
from gptjax.config import PRESETS, GPTConfig
from gptjax.data import chat, instruct, tokenizer
from gptjax.inference import generation
from gptjax.model.weights import WEIGHTS, quantize
from gptjax.options import parse, run_cli
from gptjax.store import open_or_preset


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
    weights: Literal[*WEIGHTS] = "fp32"
    """weight format: fp32 exact; bf16 or int8 read 2x or 4x fewer bytes a token (faster
    decoding, a little less accurate: gptjax.model.weights)"""
    stop_at_eos: bool = True
    """stop when the model emits <|endoftext|>"""
    instruction: str | None = None
    """ask an instruction-tuned model (replaces --prompt)"""
    input: str = ""
    """the instruction's input, if any"""


def prompt_ids(opts: Options, enc, template: str) -> list[int]:
    """--prompt's ids, or --instruction's in the model's template."""
    if opts.instruction is None:
        return enc.encode(opts.prompt)
    if template == "chatml":
        content = "\n\n".join(t for t in (opts.instruction, opts.input) if t)
        return chat.encode(enc, [{"role": "user", "content": content}], add_generation_prompt=True)
    entry = {"instruction": opts.instruction, "input": opts.input}
    return enc.encode(instruct.prompt_text(entry))


def write_tokens(opts: Options, cfg: GPTConfig, params, enc, template: str = "alpaca") -> int:
    """Write the prompt (cut to leave room), then each new token's text as it is decoded, to
    stdout; -> how many tokens were generated."""
    ids = prompt_ids(opts, enc, template)
    prompt = generation.prepare_prompt(cfg, ids, opts.max_new_tokens)[0].tolist()
    if opts.instruction is None:  # an instruction's answer is printed alone
        sys.stdout.write(enc.decode(prompt))
    tokens = generation.stream(
        cfg,
        params,
        prompt,
        max_new_tokens=opts.max_new_tokens,
        temperature=opts.temperature,
        top_k=opts.top_k,
        top_p=opts.top_p,
        eos_id=chat.end_id(enc, template) if opts.stop_at_eos and stops(cfg, enc) else None,
        rng=jax.random.key(opts.seed),
        dtype=jnp.dtype(opts.dtype),
    )
    text, n = tokenizer.Detokenizer(enc), 0
    for tok in tokens:
        sys.stdout.write(text.push(tok)[0])
        sys.stdout.flush()
        n += 1
    return n


def stops(cfg: GPTConfig, enc) -> bool:
    """Whether the model has a row for its tokenizer's end token (toy vocabularies have not)."""
    return enc.eot_token < cfg.vocab_size


def main(argv=None) -> None:
    heap.keep()  # before the first computation (gptjax.heap: a CPU run's step buffers reused)
    opts = parse(Options, argv, __doc__)
    model = open_or_preset(opts.ckpt, opts.preset, seed=opts.seed)
    params, enc = quantize(jax.device_put(model.params), opts.weights), model.encoding()
    start = time.perf_counter()
    n = write_tokens(opts, model.cfg, params, enc, chat.template_of(model.task))
    seconds = time.perf_counter() - start
    print(file=sys.stdout)
    print(f"[{n} tokens in {seconds:.2f}s, {n / seconds:.1f} tok/s incl. compile]", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
