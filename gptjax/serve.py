"""Serve a GPT-2 with OpenAI's API, concurrent requests decoded together (`gptjax.engine`).

    python -m gptjax.serve --ckpt runs/instruct [--port 8000] [--slots 8] [--api-key KEY]

prints `serving NAME (KIND) on http://127.0.0.1:8000 with 8 slots`, then uvicorn's request log.
The checkpoint's kind is read from it: a language model answers `/v1/completions`, an
instruction-tuned one (`train.instruct`, `train.dpo`) also `/v1/chat/completions` (messages in
the Alpaca template), a classifier `/v1/classify`. `GET /` is a page to chat or classify;
`GET /v1/models` and `GET /health` say what is served. Without `--ckpt`, random weights of
`--preset`. It binds to 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from gptjax import openai_api as api
from gptjax import tokenizer
from gptjax.classifier import Predictor
from gptjax.config import PRESETS, GPTConfig
from gptjax.engine import Engine
from gptjax.model import init_params
from gptjax.options import option, parse, run_cli
from gptjax.serve_stream import answer

MAX_BODY = 1 << 20
DRAIN = 8  # see read_json


@dataclass(frozen=True)
class Options:
    ckpt: str | None = option(None, "checkpoint, run or HF folder (default: random weights)")
    preset: str = option("tiny", "model size when no --ckpt is given", choices=list(PRESETS))
    host: str = option("127.0.0.1", "address to bind; other than loopback, anyone may connect")
    port: int = option(8000, "port")
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' on /v1/")
    slots: int = option(8, "requests decoded together")
    dtype: str = option("float32", "compute dtype", choices=["float32", "bfloat16"])
    max_body: int = option(MAX_BODY, "largest request body in bytes (larger: 413)")
    name: str | None = option(None, "model id in the API (default: the checkpoint's folder name)")


@dataclass
class Served:
    """What the app serves: `kind` is lm, instruct or classifier; `engine` generates (not for
    a classifier), `predictor` classifies (only for one)."""

    name: str
    kind: str
    cfg: GPTConfig
    enc: object
    engine: Engine | None = None
    predictor: Predictor | None = None


def load(opts: Options) -> Served:
    """The model of --ckpt (or random --preset weights), with its engine or predictor."""
    if opts.ckpt is None:
        cfg = GPTConfig.preset(opts.preset)
        opened = None
        kind, params, name = "lm", init_params(cfg, jax.random.key(0)), f"gpt2-{opts.preset}"
    else:
        from convert.load import open_model  # an entry point: it opens any folder convert reads

        opened = open_model(opts.ckpt)
        cfg, kind, params = opened.cfg, opened.kind, opened.params
        name = Path(opts.ckpt).absolute().name
    tokenizer.check_vocab(cfg.vocab_size, opts.ckpt or f"preset {opts.preset}")
    served = Served(opts.name or name, kind, cfg, tokenizer.gpt2())
    params = jax.device_put(params)
    if kind == "classifier":
        served.predictor = Predictor(opened.module, params, opened.head)
    else:
        eos = tokenizer.EOT_ID if cfg.vocab_size > tokenizer.EOT_ID else None
        served.engine = Engine(cfg, params, slots=opts.slots, eos_id=eos,
                               dtype=jnp.dtype(opts.dtype))  # fmt: skip
    return served


def create_app(served: Served, *, api_key: str | None = None, max_body: int = MAX_BODY):
    """The ASGI app; its lifespan starts and stops the engine's thread."""

    @asynccontextmanager
    async def lifespan(app):
        if served.engine is not None:
            served.engine.start()
        yield
        if served.engine is not None:
            served.engine.stop()

    app = FastAPI(title="gptjax", lifespan=lifespan, docs_url=None, redoc_url=None)
    errors(app, served, api_key)

    info = json.dumps({"model": served.name, "kind": served.kind}).replace("<", "\\u003c")
    html = resources.files("gptjax").joinpath("web/index.html").read_text()
    html = html.replace("/*SERVED*/null", info)  # the page, filled in once

    @app.get("/")
    async def page():
        return HTMLResponse(html)

    @app.get("/health")
    async def health():
        engine = served.engine
        free = engine.free() if engine else None
        return {"status": "ok", "model": served.name, "kind": served.kind, "free_slots": free,
                "slots": len(engine.busy) if engine else None}  # fmt: skip

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(served)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(served, {"model": model_id})
        return model_card(served)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body, "lm", "instruct")
        prompts = api.completion_prompts(body, served.enc, served.cfg.vocab_size)
        p = api.params(body, max(map(len, prompts)), served.cfg.context_length, 16)
        return await answer(served, "text_completion", prompts, p)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body, "instruct")
        prompt = served.enc.encode(api.chat_prompt(body), allowed_special={"<|endoftext|>"})
        p = api.params(body, len(prompt), served.cfg.context_length, None)
        return await answer(served, "chat.completion", [prompt], p)

    @app.post("/v1/classify")
    async def classify(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body, "classifier")
        texts = api.classify_texts(body)
        ids = [served.enc.encode_ordinary(t) for t in texts]
        probs = await asyncio.to_thread(served.predictor, ids)
        labels = served.predictor.head["labels"]
        data = [{"index": i, "label": labels[int(p.argmax())],
                 "probabilities": dict(zip(labels, map(float, p), strict=True))}
                for i, p in enumerate(probs)]  # fmt: skip
        n = sum(min(len(x), served.predictor.head["max_length"]) for x in ids)
        return {"object": "list", "model": served.name, "data": data, "usage": api.usage(n, 0)}

    return app


def errors(app: FastAPI, served: Served, api_key: str | None) -> None:
    """OpenAI-style error JSON for every failure, and the API key check."""

    def reply(e: api.APIError):
        return JSONResponse(e.body(), status_code=e.status)

    app.add_exception_handler(api.APIError, lambda request, e: reply(e))
    app.add_exception_handler(
        HTTPException, lambda request, e: reply(api.APIError(e.status_code, str(e.detail)))
    )

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):  # a bug, not bad input: say what, stay up
        return reply(api.APIError(500, f"internal error: {type(e).__name__}: {e}"))

    denied = api.APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                          code="invalid_api_key")  # fmt: skip

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        guarded = api_key and request.url.path.startswith("/v1/")
        if guarded and request.headers.get("authorization", "") != f"Bearer {api_key}":
            return reply(denied)
        return await call_next(request)


async def read_json(request: Request, max_body: int) -> dict:
    """The body as a JSON object: 413 past max_body bytes, 400 if it is not a JSON object."""
    too_big = api.APIError(413, f"request body is larger than {max_body} bytes")
    # A body up to DRAIN times the limit is read to its end (and dropped) before the 413: a
    # client still sending when the server answers and closes gets a broken pipe, not the 413.
    if int(request.headers.get("content-length") or 0) > DRAIN * max_body:
        raise too_big
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN * max_body:
            raise too_big
        if size <= max_body:
            body += chunk
    if size > max_body:
        raise too_big
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise api.APIError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise api.APIError(400, "request body must be a JSON object")
    return obj


def check_model(served: Served, body: dict, *kinds: str) -> None:
    model = api.get(body, "model", str)
    if model is not None and model != served.name:
        raise api.APIError(404, f"model {model!r} does not exist; this server has "
                           f"{served.name!r}", "model", "model_not_found")  # fmt: skip
    if kinds and served.kind not in kinds:
        what, use = {
            "classifier": ("a classifier", "/v1/classify"),
            "lm": ("a language model, not instruction-tuned", "/v1/completions"),
            "instruct": ("not a classifier", "/v1/completions or /v1/chat/completions"),
        }[served.kind]
        raise api.APIError(400, f"model {served.name!r} is {what}: use {use}", "model")


def model_card(served: Served) -> dict:
    return {"id": served.name, "object": "model", "created": 0, "owned_by": "gptjax",
            "kind": served.kind, "context_length": served.cfg.context_length}  # fmt: skip


class Background:
    """Run an app on 127.0.0.1 in a thread (tests, the load script): `with Background(app) as
    url:` gives its base URL, on a free port unless `port` is given."""

    def __init__(self, app, port: int = 0):
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()


def main(argv=None) -> None:
    opts = parse(Options, argv, description=__doc__.split("\n\n")[0])
    if opts.slots < 1:
        raise ValueError(f"--slots must be at least 1, got {opts.slots}")
    served = load(opts)
    import uvicorn

    app = create_app(served, api_key=opts.api_key, max_body=opts.max_body)
    where = f"http://{opts.host}:{opts.port}"
    print(f"serving {served.name} ({served.kind}) on {where} with {opts.slots} slots", flush=True)
    if opts.host not in ("127.0.0.1", "localhost", "::1") and not opts.api_key:
        print(f"warning: {opts.host} is reachable from other machines and no --api-key is set",
              file=sys.stderr)  # fmt: skip
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="info")


if __name__ == "__main__":
    run_cli(main)
