"""Serve a GPT-2 with OpenAI's API, requests decoded together (`gptjax.inference.engine`).

    python -m train.serve --ckpt runs/instruct [--port 8000] [--slots 8] [--api-key KEY]

prints `serving NAME (KIND) on http://127.0.0.1:8000 with 8 slots`, then uvicorn's request log.
The checkpoint's kind is read from it: a language model answers `/v1/completions`, an
instruction-tuned one (`train.instruct`, `train.dpo`) also `/v1/chat/completions` (messages in
the Alpaca template), a classifier `/v1/classify`. `GET /` is a page to chat or classify;
`GET /v1/models` and `GET /health` say what is served. Without `--ckpt`, random weights of
`--preset`. It binds to 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jax

from convert.load import open_model
from gptjax.config import PRESETS, GPTConfig
from gptjax.data import tokenizer
from gptjax.inference.server import MAX_BODY, Served, build, create_app
from gptjax.model.gpt import init_params
from gptjax.options import parse, run_cli


@dataclass(frozen=True)
class Options:
    ckpt: str | None = None
    """checkpoint, run or HF folder (unset: random weights)"""
    preset: Literal[*PRESETS] = "tiny"
    """model size when no --ckpt is given"""
    host: str = "127.0.0.1"
    """address to bind; other than loopback, anyone may connect"""
    port: int = 8000
    """port"""
    api_key: str | None = None
    """require 'Authorization: Bearer KEY' on /v1/"""
    slots: int = 8
    """requests decoded together"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """compute dtype"""
    max_body: int = MAX_BODY
    """largest request body in bytes (larger: 413)"""
    name: str | None = None
    """model id in the API (unset: the checkpoint's folder name)"""


def load(opts: Options) -> Served:
    """The model of --ckpt (any folder `convert` opens; its kind read from it), or random
    --preset weights."""
    if opts.ckpt is None:
        cfg = GPTConfig.preset(opts.preset)
        kind, params, name = "lm", init_params(cfg, jax.random.key(0)), f"gpt2-{opts.preset}"
        module = head = None
    else:
        opened = open_model(opts.ckpt)
        cfg, kind, params = opened.cfg, opened.kind, opened.params
        module, head, name = opened.module, opened.head, Path(opts.ckpt).absolute().name
    tokenizer.check_vocab(cfg.vocab_size, opts.ckpt or f"preset {opts.preset}")
    return build(
        opts.name or name,
        kind,
        cfg,
        params,
        slots=opts.slots,
        dtype=opts.dtype,
        module=module,
        head=head,
    )


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    if opts.slots < 1:
        raise ValueError(f"--slots must be at least 1, got {opts.slots}")
    served = load(opts)
    import uvicorn

    app = create_app(served, api_key=opts.api_key, max_body=opts.max_body)
    where = f"http://{opts.host}:{opts.port}"
    print(f"serving {served.name} ({served.kind}) on {where} with {opts.slots} slots", flush=True)
    if opts.host not in ("127.0.0.1", "localhost", "::1") and not opts.api_key:
        print(
            f"warning: {opts.host} is reachable from other machines and no --api-key is set",
            file=sys.stderr,
        )
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="info")


if __name__ == "__main__":
    run_cli(main)
