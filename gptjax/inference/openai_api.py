"""OpenAI's request and response shapes for `train.serve`: a validated body (`schema`) into
token ids and sampling settings, with the checks that need the model, and the answers' shapes.
No HTTP here.

Every bad field is an `APIError` naming the field and what was expected; the server turns it
into OpenAI's error JSON ({"error": {"message", "type", "param", "code"}}) with its status.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

from gptjax.data import instruct, tokenizer
from gptjax.inference import schema
from gptjax.inference.generation import DoesNotFitError, check_fit
from gptjax.inference.schema import MAX_TEXTS


class APIError(Exception):
    """An error for the client: HTTP status, message, and the offending field (if any)."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def body(self) -> dict:
        kind = {
            401: "authentication_error",
            404: "not_found_error",
            429: "rate_limit_error",
            503: "service_unavailable",
            504: "timeout",
        }.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


@dataclass(frozen=True)
class Params:
    """How to generate: the fields shared by completions and chat."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int
    stream: bool
    n: int = 1  # samples per prompt
    logprobs: int | None = None  # alternatives per token; None: no log-probs
    echo: bool = False  # the prompt (and its log-probs) before the completion
    include_usage: bool = False  # a stream ends with a usage chunk


def params(req: schema.Sampling, n_prompt: int, context: int, default_max: int | None) -> Params:
    """Sampling settings of a request whose longest prompt has n_prompt tokens; default_max:
    max_tokens when unset (None: the room left)."""
    if field := req.refused():
        raise APIError(400, f"'{field}' is not supported by this server", field)
    echo = bool(getattr(req, "echo", False))
    mt = (
        req.max_tokens
        if req.max_tokens is not None
        else getattr(req, "max_completion_tokens", None)
    )
    try:  # echo with max_tokens 0 only scores the prompt
        room = check_fit(context, n_prompt, mt, least_new=0 if echo else 1)
    except DoesNotFitError as e:
        hint = "; 0 only with echo" if e.param == "max_tokens" and not echo else ""
        raise APIError(400, f"{e}{hint}", e.param, "context_length_exceeded") from None
    n = req.n or 1
    if getattr(req, "best_of", None) not in (None, n):
        raise APIError(400, "best_of other than n is not supported by this server", "best_of")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed with stream: true", "stream_options")
    return Params(
        max_tokens=mt if mt is not None else min(default_max or room, room),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
        seed=secrets.randbits(31) if req.seed is None else req.seed,
        stream=bool(req.stream),
        n=n,
        logprobs=_logprobs(req),
        echo=echo,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


def _logprobs(req: schema.Sampling) -> int | None:
    """Alternatives per token, or None: completions' `logprobs`, or chat's `logprobs: true`
    with `top_logprobs` (0 when unset)."""
    if isinstance(req, schema.CompletionRequest):
        return req.logprobs
    if not req.logprobs:
        if req.top_logprobs is not None:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        return None
    return req.top_logprobs or 0


def completion_prompts(req: schema.CompletionRequest, enc, vocab_size: int) -> list[list[int]]:
    """`prompt`: a string, a list of strings, a list of token ids, or a list of such lists."""
    prompt = req.prompt
    flat = isinstance(prompt, str) or (bool(prompt) and isinstance(prompt[0], int))
    out = []
    for item in [prompt] if flat else prompt:
        ids = tokenizer.encode(enc, item) if isinstance(item, str) else list(item)
        if any(t >= vocab_size for t in ids):
            raise APIError(400, f"token ids must be in [0, {vocab_size})", "prompt")
        if not ids:
            raise APIError(400, "a prompt needs at least one token", "prompt")
        out.append(ids)
    if len(out) * (req.n or 1) > MAX_TEXTS:
        raise APIError(400, f"prompts times n must be at most {MAX_TEXTS}", "n")
    return out


def chat_prompt(messages: list[schema.Message]) -> str:
    """The Alpaca prompt of `messages`: earlier user/assistant turns as answered examples, the
    last user message as the instruction; a system message goes first, on its own."""
    system, turns, pending = [], [], None
    for m in messages:
        if m.role in ("system", "developer"):
            system.append(m.text())
        elif m.role == "user":
            pending = m.text()
        elif pending is not None:  # an assistant's answer to the user message before it
            turns.append(instruct.training_text({"instruction": pending}, m.text()))
            pending = None
    if pending is None:
        raise APIError(400, "the last message must come from the user", "messages")
    last = instruct.format_prompt({"instruction": pending}) + instruct.RESPONSE
    return "\n\n".join([*system, *turns, last])


def token_bytes(enc, token: int) -> bytes:
    """A token's bytes; ids past the tokenizer's (a padded vocabulary) as a readable name."""
    if token < enc.n_vocab:
        return enc.decode_single_token_bytes(token)
    return f"<|token_{token}|>".encode()


def token_text(enc, token: int) -> str:
    return token_bytes(enc, token).decode("utf-8", errors="replace")


def text_logprobs(enc, entries: list, offset: int = 0) -> dict:
    """Completions' `logprobs` object of `entries`: Scored tokens, or plain token ids for a
    token with no log-prob (the first prompt token of an echo). `text_offset` counts from
    `offset`, the length of the choice's text before these tokens."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in entries:
        scored = not isinstance(e, int)
        text = token_text(enc, e.token if scored else e)
        out["tokens"].append(text)
        out["text_offset"].append(offset)
        offset += len(text)
        out["token_logprobs"].append(e.logprob if scored else None)
        out["top_logprobs"].append(_alternatives(enc, e) if scored else None)
    return out


def _alternatives(enc, e) -> dict[str, float]:
    """{token text: log-prob}: the top alternatives, best first, then the token itself. When
    two ids print the same text the likelier keeps it, so max() still finds the best."""
    top = {}
    for i, lp in zip(e.top_ids.tolist(), e.top_logprobs.tolist(), strict=True):
        top.setdefault(token_text(enc, i), lp)
    top.setdefault(token_text(enc, e.token), e.logprob)
    return top


def chat_content_logprobs(enc, entries: list) -> list[dict]:
    """Chat's `logprobs.content` entries of Scored tokens: token, logprob, bytes and the top
    alternatives in the same shape."""
    entry = lambda t, lp: {
        "token": token_text(enc, t),
        "logprob": lp,
        "bytes": list(token_bytes(enc, t)),
    }
    return [
        {
            **entry(e.token, e.logprob),
            "top_logprobs": [
                entry(i, lp)
                for i, lp in zip(e.top_ids.tolist(), e.top_logprobs.tolist(), strict=True)
            ],
        }
        for e in entries
    ]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id(kind: str) -> str:
    return f"{'cmpl' if kind == 'text_completion' else 'chatcmpl'}-{uuid.uuid4().hex[:24]}"


def envelope(kind: str, model: str, choices: list, id: str | None = None, **extra) -> dict:
    """The fields every answer has. kind: text_completion, chat.completion(.chunk); the chunks
    of one stream share one `id`."""
    return {
        "id": id or new_id(kind),
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        **extra,
    }
