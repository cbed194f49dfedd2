"""OpenAI's request and response shapes for `train.serve`: parse and check a JSON body into
token ids and sampling settings, and build the answers. No HTTP here.

Every bad field is an `APIError` naming the field and what was expected; the server turns it
into OpenAI's error JSON ({"error": {"message", "type", "param", "code"}}) with its status.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

from gptjax.data import instruct

MAX_STOPS = 16  # lm-eval sends a task's stop strings and <|endoftext|>; OpenAI allows 4
MAX_TEXTS = 256  # prompts or texts in one request; also prompts times n
MAX_LOGPROBS = 5  # completions' `logprobs`, as OpenAI's
MAX_TOP_LOGPROBS = 20  # chat's `top_logprobs`, as OpenAI's


class APIError(Exception):
    """An error for the client: HTTP status, message, and the offending field (if any)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error"}.get(
            self.status, "invalid_request_error"
        )
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


def get(body: dict, name: str, types, default=None, *, required=False):
    """body[name], checked to be of `types` (bool is not a number here)."""
    if name not in body or body[name] is None:
        if required:
            raise APIError(400, f"missing required field '{name}'", name, "missing_field")
        return default
    value = body[name]
    numeric = types in (int, float, (int, float))
    if (numeric and isinstance(value, bool)) or not isinstance(value, types):
        names = (
            types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        )
        raise APIError(
            400, f"'{name}' must be {names}, got {type(value).__name__}", name, "invalid_type"
        )
    return value


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


def params(body: dict, n_prompt: int, context: int, default_max: int | None) -> Params:
    """Sampling settings of a request whose longest prompt has n_prompt tokens (a chat request
    when `default_max` is None)."""
    chat = default_max is None
    echo = False if chat else get(body, "echo", bool, False)
    least = 0 if echo else 1  # echo with max_tokens 0 only scores the prompt
    if n_prompt > context - least:
        raise APIError(
            400,
            f"the prompt is {n_prompt} tokens; this model's context is "
            f"{context} tokens, with room for at least one new",
            "prompt",
            "context_length_exceeded",
        )
    room = context - n_prompt
    mt = get(body, "max_tokens", int)
    mt = get(body, "max_completion_tokens", int) if mt is None else mt
    if mt is not None and not least <= mt <= room:
        raise APIError(
            400,
            f"max_tokens must be between {least} and {room} (context {context} minus "
            f"the prompt's {n_prompt} tokens{'' if echo else '; 0 only with echo'}), got {mt}",
            "max_tokens",
            "context_length_exceeded",
        )
    temperature = float(get(body, "temperature", (int, float), 1.0))
    top_p = float(get(body, "top_p", (int, float), 1.0))
    if not 0 <= temperature <= 2:
        raise APIError(400, f"temperature must be in [0, 2], got {temperature}", "temperature")
    if not 0 < top_p <= 1:
        raise APIError(400, f"top_p must be in (0, 1], got {top_p}", "top_p")
    if body.get("tools"):
        raise APIError(400, "'tools' is not supported by this server", "tools")
    seed = get(body, "seed", int)
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise APIError(400, f"seed must fit in 64 bits, got {seed}", "seed")
    return Params(
        max_tokens=mt if mt is not None else min(default_max or room, room),
        temperature=temperature,
        top_p=top_p,
        stop=stops(body),
        seed=secrets.randbits(31) if seed is None else seed,
        stream=get(body, "stream", bool, False),
        n=_samples(body),
        logprobs=_chat_logprobs(body) if chat else _ranged(body, "logprobs", MAX_LOGPROBS),
        echo=echo,
    )


def _samples(body: dict) -> int:
    n = get(body, "n", int, 1)
    if not 1 <= n <= MAX_TEXTS:
        raise APIError(400, f"n must be between 1 and {MAX_TEXTS}, got {n}", "n")
    if get(body, "best_of", int, n) != n:
        raise APIError(400, "best_of other than n is not supported by this server", "best_of")
    return n


def _ranged(body: dict, name: str, most: int) -> int | None:
    value = get(body, name, int)
    if value is not None and not 0 <= value <= most:
        raise APIError(400, f"{name} must be between 0 and {most}, got {value}", name)
    return value


def _chat_logprobs(body: dict) -> int | None:
    """Chat's `logprobs: true` with `top_logprobs` alternatives (0 when absent)."""
    top = _ranged(body, "top_logprobs", MAX_TOP_LOGPROBS)
    if not get(body, "logprobs", bool, False):
        if top is not None:
            raise APIError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        return None
    return top or 0


def stops(body: dict) -> tuple[str, ...]:
    stop = get(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in stop):
        raise APIError(
            400,
            f"'stop' must be a string or a list of at most {MAX_STOPS} non-empty strings",
            "stop",
        )
    return tuple(stop)


def completion_prompts(body: dict, enc, vocab_size: int) -> list[list[int]]:
    """`prompt`: a string, a list of strings, a list of token ids, or a list of such lists."""
    prompt = get(body, "prompt", (str, list), required=True)
    items = [prompt] if isinstance(prompt, str) or _is_ids(prompt) else prompt
    if not 1 <= len(items) <= MAX_TEXTS:
        raise APIError(400, f"'prompt' must hold 1 to {MAX_TEXTS} prompts", "prompt")
    out = []
    for item in items:
        if isinstance(item, str):
            out.append(enc.encode(item, allowed_special={"<|endoftext|>"}))
        elif isinstance(item, list) and _is_ids(item):
            if any(not 0 <= t < vocab_size for t in item):
                raise APIError(400, f"token ids must be in [0, {vocab_size})", "prompt")
            out.append(list(item))
        else:
            raise APIError(
                400,
                "'prompt' must be a string, a list of strings or token ids",
                "prompt",
                "invalid_type",
            )
        if not out[-1]:
            raise APIError(400, "a prompt needs at least one token", "prompt")
    return out


def _is_ids(x) -> bool:
    return isinstance(x, list) and bool(x) and all(type(t) is int for t in x)


def chat_prompt(body: dict) -> str:
    """The Alpaca prompt of `messages`: earlier user/assistant turns as answered examples, the
    last user message as the instruction; a system message goes first, on its own."""
    messages = get(body, "messages", list, required=True)
    if not messages:
        raise APIError(400, "'messages' must not be empty", "messages")
    system, turns, pending = [], [], None
    for i, m in enumerate(messages):
        role, text = _message(m, i)
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            pending = text
        elif pending is not None:  # an assistant's answer to the user message before it
            turns.append(instruct.training_text({"instruction": pending}, text))
            pending = None
    if pending is None:
        raise APIError(400, "the last message must come from the user", "messages")
    last = instruct.format_prompt({"instruction": pending}) + instruct.RESPONSE
    return "\n\n".join([*system, *turns, last])


def _message(m, i: int) -> tuple[str, str]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise APIError(400, f"{where} must be an object", where, "invalid_type")
    role = get(m, "role", str, required=True)
    if role not in ("system", "developer", "user", "assistant"):
        raise APIError(400, f"{where}.role must be system, user or assistant, got {role!r}", where)
    content = get(m, "content", (str, list), "")
    if isinstance(content, list):  # content parts: only text ones
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            raise APIError(400, f"{where}.content: only text parts are supported", where)
        content = "".join(str(p.get("text", "")) for p in content)
    return role, content


def classify_texts(body: dict) -> list[str]:
    texts = get(body, "texts", (list, str), required=True)
    texts = [texts] if isinstance(texts, str) else texts
    if not 1 <= len(texts) <= MAX_TEXTS or not all(isinstance(t, str) for t in texts):
        raise APIError(
            400, f"'texts' must be a string or a list of 1 to {MAX_TEXTS} strings", "texts"
        )
    return texts


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
