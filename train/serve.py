"""Serve a GPT-2 with OpenAI's API, requests decoded together (`gptjax.inference.engine`).

    python -m train.serve --ckpt runs/instruct [--port 8000] [--slots 8] [--api-key KEY]

prints `serving NAME (KIND) on http://127.0.0.1:8000 with 8 slots`, then uvicorn's request log;
`/health` says 503 until the model has compiled, 200 after. On SIGTERM it turns new requests
away (503), lets those in flight finish for up to --grace seconds and exits 0 with one line.
The checkpoint's kind is read from it: a language model answers `/v1/completions`, an
instruction-tuned one (`train.instruct`, `train.dpo`) also `/v1/chat/completions` (messages in
the Alpaca template), a classifier `/v1/classify`. `GET /` is a page to chat or classify;
`GET /v1/models` and `GET /health` say what is served. Without `--ckpt`, random weights of
`--preset`. It binds to 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Literal

from gptjax import heap
from gptjax.config import PRESETS
from gptjax.inference.server import MAX_BODY, Served, create_app, open_served
from gptjax.model.weights import WEIGHTS
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
    weights: Literal[*WEIGHTS] = "fp32"
    """weight format: fp32 exact; bf16 or int8 read 2x or 4x fewer bytes a token (faster
    decoding, a little less accurate: gptjax.model.weights)"""
    max_body: int = MAX_BODY
    """largest request body in bytes (larger: 413)"""
    max_queue: int | None = None
    """generations that may wait for a slot (more: 429 with Retry-After; unset: 4 x --slots)"""
    timeout: float | None = None
    """seconds a request may take (longer: 504, its slots freed; unset: no limit)"""
    grace: float = 30.0
    """seconds requests in flight get to finish after SIGTERM"""
    name: str | None = None
    """model id in the API (unset: the checkpoint's folder name)"""


def load(opts: Options) -> Served:
    """The model of --ckpt (any folder `gptjax.store.Model` opens; its kind read from it), or
    random --preset weights."""
    return open_served(
        opts.ckpt,
        opts.preset,
        opts.name,
        slots=opts.slots,
        dtype=opts.dtype,
        weights=opts.weights,
        max_queue=opts.max_queue,
        timeout=opts.timeout,
    )


class Server:
    """uvicorn's server with a graceful SIGTERM: stop admitting, let requests in flight finish
    for up to `grace` seconds, then stop (a second signal stops at once)."""

    def __init__(self, served: Served, config, grace: float):
        import uvicorn

        self.served, self.grace, self.cut = served, grace, None
        self.server = uvicorn.Server(config)
        self.server.handle_exit = self.handle_exit
        self.uvicorn_exit = uvicorn.Server.handle_exit.__get__(self.server)

    def handle_exit(self, sig, frame) -> None:
        # SIGTERM is handled here, not recorded for uvicorn to raise again on its way out
        # (which would end the process by the signal instead of exit 0).
        if sig != signal.SIGTERM:
            return self.uvicorn_exit(sig, frame)
        if self.served.draining:  # a second SIGTERM: stop now
            self.server.should_exit = self.server.force_exit = True
            return
        self.served.draining = True
        threading.Thread(target=self.drain, daemon=True).start()

    def drain(self) -> None:
        deadline = time.monotonic() + self.grace
        while self.served.inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        self.cut = self.served.inflight
        self.server.should_exit = True

    def run(self) -> None:
        self.server.run()
        if self.cut is not None:
            cut = f"{self.cut} cut at --grace {self.grace:g} s" if self.cut else "none cut"
            print(f"stopped on SIGTERM: requests in flight finished ({cut})", flush=True)


def main(argv=None) -> None:
    heap.keep()  # before the first computation (gptjax.heap: a CPU run's step buffers reused)
    opts = parse(Options, argv, __doc__)
    for name, least in (("slots", 1), ("max_queue", 1), ("timeout", 1e-9), ("grace", 0)):
        value = getattr(opts, name)
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be {'positive' if least else 'at least 0'}, got {value}")
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
    config = uvicorn.Config(
        app, host=opts.host, port=opts.port, log_level="info", timeout_graceful_shutdown=1
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # our lines, not its own
    Server(served, config, opts.grace).run()


if __name__ == "__main__":
    run_cli(main)
