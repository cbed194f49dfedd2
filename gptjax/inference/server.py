"""The OpenAI-compatible app: what is served (`build`), its routes and errors (`create_app`), and
`Background` to run it in a thread. `python -m train.serve` is its command.

A language model answers `/v1/completions`, an instruction-tuned one also `/v1/chat/completions`
(messages in the Alpaca template), a classifier `/v1/classify`. `GET /` is a page to chat or
classify; `GET /v1/models` and `GET /health` say what is served. `POST /tokenize`,
`POST /detokenize` and `GET /tokenizer_info` speak vLLM's shapes, which lm-eval's remote
tokenizer uses.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import jax
import jax.numpy as jnp
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from gptjax.config import GPTConfig
from gptjax.data import tokenizer
from gptjax.data.tokenizer import ENDOFTEXT
from gptjax.inference import openai_api as api
from gptjax.inference.engine import Engine
from gptjax.inference.stream import answer
from gptjax.model.classifier import Predictor

MAX_BODY = 1 << 20
DRAIN = 8  # see read_json


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


def build(
    name: str,
    kind: str,
    cfg: GPTConfig,
    params,
    *,
    slots: int = 8,
    dtype=jnp.float32,
    module=None,
    head: dict | None = None,
) -> Served:
    """What to serve: `params` on the devices, with an engine of `slots` rows (kind lm or
    instruct) or a predictor (kind classifier: its `module` and `head`)."""
    served = Served(name, kind, cfg, tokenizer.gpt2())
    params = jax.device_put(params)
    if kind == "classifier":
        served.predictor = Predictor(module, params, head)
    else:
        eos = tokenizer.EOT_ID if cfg.vocab_size > tokenizer.EOT_ID else None
        served.engine = Engine(cfg, params, slots=slots, eos_id=eos, dtype=jnp.dtype(dtype))
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
    html = resources.files("gptjax.inference").joinpath("web/index.html").read_text()
    html = html.replace("/*SERVED*/null", info)  # the page, filled in once

    @app.get("/")
    async def page():
        return HTMLResponse(html)

    @app.get("/health")
    async def health():
        engine = served.engine
        free = engine.free() if engine else None
        return {
            "status": "ok",
            "model": served.name,
            "kind": served.kind,
            "free_slots": free,
            "slots": len(engine.busy) if engine else None,
        }

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
        if len(prompts) * p.n > api.MAX_TEXTS:
            raise api.APIError(400, f"prompts times n must be at most {api.MAX_TEXTS}", "n")
        return await answer(served, "text_completion", prompts, p)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body, "instruct")
        prompt = served.enc.encode(api.chat_prompt(body), allowed_special={ENDOFTEXT})
        p = api.params(body, len(prompt), served.cfg.context_length, None)
        return await answer(served, "chat.completion", [prompt], p)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body)
        api.get(body, "add_special_tokens", bool)  # GPT-2 adds none either way
        if "messages" in body:
            check_model(served, body, "instruct")
            text = api.chat_prompt(body)
        else:
            text = api.get(body, "prompt", str, required=True)
        ids = served.enc.encode(text, allowed_special={ENDOFTEXT})
        strs = [api.token_text(served.enc, t) for t in ids]
        return {
            "count": len(ids),
            "max_model_len": served.cfg.context_length,
            "tokens": ids,
            "token_strs": strs if api.get(body, "return_token_strs", bool, False) else None,
        }

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body)
        ids = api.get(body, "tokens", list, required=True)
        vocab = min(served.cfg.vocab_size, served.enc.n_vocab)
        if not all(type(t) is int and 0 <= t < vocab for t in ids):
            raise api.APIError(400, f"'tokens' must be token ids in [0, {vocab})", "tokens")
        return {"prompt": served.enc.decode(ids, errors="replace")}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        info = tokenizer.hf_tokenizer_config(served.cfg.context_length)
        if served.cfg.vocab_size <= tokenizer.EOT_ID:  # a model without <|endoftext|>
            info |= {"bos_token": None, "eos_token": None, "unk_token": None}
        return info

    @app.post("/v1/classify")
    async def classify(request: Request):
        body = await read_json(request, max_body)
        check_model(served, body, "classifier")
        texts = api.classify_texts(body)
        ids = [served.enc.encode_ordinary(t) for t in texts]
        probs = await asyncio.to_thread(served.predictor, ids)
        labels = served.predictor.head["labels"]
        data = [
            {
                "index": i,
                "label": labels[int(p.argmax())],
                "probabilities": dict(zip(labels, map(float, p), strict=True)),
            }
            for i, p in enumerate(probs)
        ]
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

    denied = api.APIError(
        401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key"
    )

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
        raise api.APIError(
            404,
            f"model {model!r} does not exist; this server has {served.name!r}",
            "model",
            "model_not_found",
        )
    if kinds and served.kind not in kinds:
        what, use = {
            "classifier": ("a classifier", "/v1/classify"),
            "lm": ("a language model, not instruction-tuned", "/v1/completions"),
            "instruct": ("not a classifier", "/v1/completions or /v1/chat/completions"),
        }[served.kind]
        raise api.APIError(400, f"model {served.name!r} is {what}: use {use}", "model")


def model_card(served: Served) -> dict:
    return {
        "id": served.name,
        "object": "model",
        "created": 0,
        "owned_by": "gptjax",
        "kind": served.kind,
        "context_length": served.cfg.context_length,
    }


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
