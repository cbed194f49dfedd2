"""The OpenAI-compatible app: what is served (`build`), its routes and errors (`create_app`), and
`Background` to run it in a thread. `python -m train.serve` is its command.

A language model answers `/v1/completions`, an instruction-tuned one also `/v1/chat/completions`
(messages in the template it was tuned on: Alpaca or ChatML, stopping at its end-of-turn
token), a classifier `/v1/classify`. `GET /` is a page to chat or
classify; `GET /v1/models` and `GET /health` say what is served, `GET /metrics` how it goes
(Prometheus), `/openapi.json` and `/docs` every request body. `POST /tokenize`,
`POST /detokenize` and `GET /tokenizer_info` speak vLLM's shapes, which lm-eval's remote
tokenizer uses.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from gptjax.config import GPTConfig
from gptjax.data import bpe, chat, tokenizer
from gptjax.inference import openai_api as api
from gptjax.inference import schema
from gptjax.inference.engine import Engine
from gptjax.inference.gate import Gate
from gptjax.inference.metrics import Metrics
from gptjax.inference.stream import answer
from gptjax.model.classifier import Predictor
from gptjax.model.weights import quantize
from gptjax.store import Model, open_or_preset

MAX_BODY = 1 << 20


@dataclass
class Served:
    """What the app serves: `kind` is lm, instruct or classifier; `engine` generates (not for
    a classifier), `predictor` classifies (only for one). `max_queue` generations may wait for
    a slot (more: 429), each request may take `timeout` seconds (None: no limit; more: 504);
    `draining` (set on SIGTERM) turns new requests away while `inflight` ones finish."""

    name: str
    kind: str
    cfg: GPTConfig
    enc: object
    template: str = "alpaca"
    tokenizer_info: dict = field(default_factory=dict)
    engine: Engine | None = None
    predictor: Predictor | None = None
    max_queue: int = 32
    timeout: float | None = None
    metrics: Metrics | None = None
    draining: bool = False
    inflight: int = 0
    warm: threading.Event = field(default_factory=threading.Event)

    def state(self) -> str:
        """starting (compiling), ready, draining or failed (the engine stopped on an error)."""
        if self.engine is not None and self.engine.error is not None:
            return "failed"
        if self.draining:
            return "draining"
        ready = self.engine.ready if self.engine is not None else self.warm
        return "ready" if ready.is_set() else "starting"


def open_served(ckpt: str | None, preset: str, name: str | None = None, **build_kw) -> Served:
    """`build` for the model of `ckpt` (any folder `gptjax.store.Model` opens; its kind read
    from it), or random `preset` weights; named `name`, else after the checkpoint's folder."""
    model = open_or_preset(ckpt, preset)
    default = Path(ckpt).absolute().name if ckpt else f"gpt2-{preset}"
    return build(model, name or default, **build_kw)


def build(
    model: Model,
    name: str,
    *,
    slots: int = 8,
    dtype=jnp.float32,
    weights: str = "fp32",
    max_queue: int | None = None,
    timeout: float | None = None,
) -> Served:
    """What to serve as `name`: the model's params on the devices in the `weights` format
    (`gptjax.model.weights`), with an engine of `slots` rows (kind lm or instruct) or a
    predictor (a classifier); max_queue: 4 x slots unless given."""
    max_queue = 4 * slots if max_queue is None else max_queue
    cfg, kind = model.cfg, model.kind
    enc, template = model.encoding(), chat.template_of(model.task)
    served = Served(name, kind, cfg, enc, template, max_queue=max_queue, timeout=timeout)
    served.tokenizer_info = tokenizer_config(model, enc, template)
    params = quantize(jax.device_put(model.params), weights)
    if kind == "classifier":
        served.predictor = Predictor(model.module, params, model.head)
    else:
        eos = chat.end_id(enc, template) if enc.eot_token < cfg.vocab_size else None
        served.engine = Engine(cfg, params, slots=slots, eos_id=eos, dtype=jnp.dtype(dtype))
    served.metrics = Metrics(name, served.engine)
    return served


def tokenizer_config(model: Model, enc, template: str) -> dict:
    """The tokenizer's settings as transformers' tokenizer_config.json has them."""
    context = model.cfg.context_length
    jinja = chat.JINJA if template == "chatml" else None
    if model.tokenizer is not None:
        return bpe.hf_config(enc, context, jinja)
    info = tokenizer.hf_tokenizer_config(context)
    if not tokenizer.has_eot(model.cfg.vocab_size):
        info |= {"bos_token": None, "eos_token": None, "unk_token": None}
    return info


def prompt_ids(served: Served, messages: list[schema.Message]) -> list[int]:
    """A chat's ids in the served model's template, ready for its reply."""
    if served.template == "chatml":
        turns = [{"role": m.role, "content": m.text()} for m in messages]
        return chat.encode(served.enc, turns, add_generation_prompt=True)
    return tokenizer.encode(served.enc, api.chat_prompt(messages))


def create_app(served: Served, *, api_key: str | None = None, max_body: int = MAX_BODY):
    """The ASGI app; its lifespan starts and stops the engine's thread (which compiles the
    prefill and decode programs first: /health says 503 until then)."""

    @asynccontextmanager
    async def lifespan(app):
        if served.engine is not None:
            served.engine.start()
        else:  # the classifier's programs, compiled off the event loop
            warm = lambda: (served.predictor([[0]]), served.warm.set())
            threading.Thread(target=warm, daemon=True).start()
        yield
        if served.engine is not None:
            served.engine.stop()

    app = FastAPI(title="gptjax", lifespan=lifespan, redoc_url=None)
    errors(app)
    app.add_middleware(Gate, served=served, api_key=api_key, max_body=max_body)

    info = json.dumps({"model": served.name, "kind": served.kind}).replace("<", "\\u003c")
    html = resources.files("gptjax.inference").joinpath("web/index.html").read_text()
    html = html.replace("/*SERVED*/null", info)  # the page, filled in once

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(html)

    @app.get("/health")
    async def health():
        """200 once the model is compiled and serving; 503 while starting or shutting down."""
        engine, state = served.engine, served.state()
        body = {
            "status": state,
            "model": served.name,
            "kind": served.kind,
            "free_slots": engine.free() if engine else None,
            "slots": len(engine.busy) if engine else None,
        }
        return JSONResponse(body, status_code=200 if state == "ready" else 503)

    @app.get("/metrics")
    async def metrics():
        """Prometheus metrics, in its text format."""
        return Response(served.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(served)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(served, model_id)
        return model_card(served)

    routes(app, served)
    tokenizer_routes(app, served)
    return app


def routes(app: FastAPI, served: Served) -> None:
    """The POST endpoints, their bodies validated by `schema`'s models."""

    @app.post("/v1/completions")
    async def completions(body: schema.CompletionRequest):
        check_model(served, body.model, "lm", "instruct")
        prompts = api.completion_prompts(body, served.enc, served.cfg.vocab_size)
        p = api.params(body, max(map(len, prompts)), served.cfg.context_length, 16)
        return await answer(served, "text_completion", prompts, p)

    @app.post("/v1/chat/completions")
    async def chat(body: schema.ChatRequest):
        check_model(served, body.model, "instruct")
        prompt = prompt_ids(served, body.messages)
        p = api.params(body, len(prompt), served.cfg.context_length, None)
        return await answer(served, "chat.completion", [prompt], p)

    @app.post("/v1/classify")
    async def classify(body: schema.ClassifyRequest):
        check_model(served, body.model, "classifier")
        texts = [body.texts] if isinstance(body.texts, str) else body.texts
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


def tokenizer_routes(app: FastAPI, served: Served) -> None:
    """vLLM's tokenizer endpoints, which lm-eval's remote tokenizer calls."""

    @app.post("/tokenize")
    async def tokenize(body: schema.TokenizeRequest):
        """vLLM's: a text (or a chat) -> its token ids."""
        check_model(served, body.model)
        if body.messages is not None:
            check_model(served, body.model, "instruct")
            ids = prompt_ids(served, body.messages)
        elif body.prompt is not None:
            ids = tokenizer.encode(served.enc, body.prompt)
        else:
            raise api.APIError(400, "missing required field 'prompt'", "prompt")
        strs = [api.token_text(served.enc, t) for t in ids] if body.return_token_strs else None
        context = served.cfg.context_length
        return {"count": len(ids), "max_model_len": context, "tokens": ids, "token_strs": strs}

    @app.post("/detokenize")
    async def detokenize(body: schema.DetokenizeRequest):
        """vLLM's: token ids -> text."""
        check_model(served, body.model)
        vocab = min(served.cfg.vocab_size, served.enc.n_vocab)
        if any(t >= vocab for t in body.tokens):
            raise api.APIError(400, f"'tokens' must be token ids in [0, {vocab})", "tokens")
        return {"prompt": served.enc.decode(body.tokens, errors="replace")}

    @app.get("/tokenizer_info")
    async def tokenizer_info():
        """vLLM's: the tokenizer's settings, as transformers' tokenizer_config.json has them."""
        return served.tokenizer_info


def errors(app: FastAPI) -> None:
    """OpenAI-style error JSON for every failure: 400 naming the field for a body that does not
    validate (not FastAPI's 422)."""

    def reply(e: api.APIError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    def invalid(request, e: RequestValidationError):
        message, param = schema.described(e.errors())
        return reply(api.APIError(400, message, param, "invalid_request"))

    app.add_exception_handler(api.APIError, lambda request, e: reply(e))
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(
        HTTPException, lambda request, e: reply(api.APIError(e.status_code, str(e.detail)))
    )

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):  # a bug, not bad input: say what, stay up
        return reply(api.APIError(500, f"internal error: {type(e).__name__}: {e}"))


def check_model(served: Served, model: str | None, *kinds: str) -> None:
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


def wait_ready(url: str, seconds: float = 300) -> None:
    """Wait until GET /health says 200 (listening, the model compiled); TimeoutError after
    `seconds`, RuntimeError if the server says it failed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            if e.code != 503 or json.loads(e.read()).get("status") == "failed":
                raise RuntimeError(f"{url} cannot serve: {e}") from None
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready after {seconds:.0f} s")
        time.sleep(0.05)


class Background:
    """Run an app on 127.0.0.1 in a thread (tests, the load script): `with Background(app) as
    url:` gives its base URL, on a free port unless `port` is given."""

    def __init__(self, app, port: int = 0):
        import uvicorn

        # log_config None: uvicorn's own handlers would keep whatever sys.stderr is now (a test's
        # captured stream, closed later); its warnings go through the root logger instead. A
        # long keep-alive: a client idle while others wait for a compile must not find its
        # connection closed under it (uvicorn closes idle ones after 5 s).
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            log_config=None,
            timeout_keep_alive=60,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        return url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()
