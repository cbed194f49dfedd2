"""The server's request bodies as pydantic models: FastAPI validates every request against them
and describes every field, with its type and limits, in `/openapi.json` and `/docs`.

Types are strict, as OpenAI's are ("10" is not a number, 1 is not true). Fields OpenAI defines
that this server cannot honour are refused by name (`refused`); harmless ones (`user`,
`metadata`, `store`, `service_tier`) are accepted; fields OpenAI does not define are ignored,
as vLLM does. Checks that need the model (context, vocabulary) are in `openai_api`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_STOPS = 16  # lm-eval sends a task's stop strings and <|endoftext|>; OpenAI allows 4
MAX_TEXTS = 256  # prompts or texts in one request; also prompts times n
MAX_LOGPROBS = 5  # completions' `logprobs`, as OpenAI's
MAX_TOP_LOGPROBS = 20  # chat's `top_logprobs`, as OpenAI's

# OpenAI's fields this server cannot honour, refused when set to anything but their no-op value.
UNSUPPORTED = {
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "parallel_tool_calls": None,
    "response_format": {"type": "text"},
    "logit_bias": {},
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "suffix": None,
    "audio": None,
    "modalities": ["text"],
    "prediction": None,
    "reasoning_effort": None,
    "web_search_options": None,
}

Tokens = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Stops = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOPS)]


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    model: str | None = Field(None, description="the served model's id (unset: the one served)")

    def refused(self) -> str | None:
        """The first OpenAI field set that this server cannot honour, or None."""
        extra = self.model_extra or {}
        return next((k for k, off in UNSUPPORTED.items() if extra.get(k, off) != off), None)


class Harmless(Body):
    user: str | None = Field(None, description="accepted, not used")
    metadata: dict[str, str] | None = Field(None, description="accepted, not used")
    store: bool | None = Field(None, description="accepted, not stored")
    service_tier: str | None = Field(None, description="accepted, not used")


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    include_usage: bool = Field(False, description="end the stream with a usage chunk")


class Sampling(Harmless):
    """The fields completions and chat share."""

    max_tokens: int | None = Field(
        None, ge=0, description="new tokens at most (unset: 16 for completions, the room left)"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy (unset: 1)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus mass kept (unset: 1)")
    stop: Stops | None = Field(None, description=f"up to {MAX_STOPS} strings that end the answer")
    seed: int | None = Field(
        None, ge=-(2**63), lt=2**63, description="a seeded sample is reproducible"
    )
    stream: bool | None = Field(None, description="answer as server-sent events")
    stream_options: StreamOptions | None = Field(None, description="only with stream: true")
    n: int | None = Field(None, ge=1, le=MAX_TEXTS, description="samples per prompt (unset: 1)")


class CompletionRequest(Sampling):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_TEXTS)]
        | Tokens
        | Annotated[list[Tokens], Field(min_length=1, max_length=MAX_TEXTS)]
    ) = Field(description="a text, texts, token ids, or lists of token ids")
    echo: bool | None = Field(None, description="the prompt (and its log-probs) first")
    logprobs: int | None = Field(
        None, ge=0, le=MAX_LOGPROBS, description="log-probs with this many alternatives"
    )
    best_of: int | None = Field(None, ge=1, description="only equal to n")


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = Field(None, description="text, or text parts")
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1, description="the conversation so far")
    max_completion_tokens: int | None = Field(None, ge=0, description="as max_tokens")
    logprobs: bool | None = Field(None, description="log-probs of the answer's tokens")
    top_logprobs: int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="alternatives per token (needs logprobs)"
    )


class ClassifyRequest(Body):
    texts: str | Annotated[list[str], Field(min_length=1, max_length=MAX_TEXTS)] = Field(
        description="a text or texts to classify"
    )


class TokenizeRequest(Body):
    prompt: str | None = Field(None, description="a text (or messages)")
    messages: list[Message] | None = Field(None, description="a chat, as the model reads it")
    add_special_tokens: bool = Field(True, description="GPT-2 adds none either way")
    return_token_strs: bool = Field(False, description="also each token's text")


class DetokenizeRequest(Body):
    tokens: list[Annotated[int, Field(ge=0)]] = Field(description="token ids")


def described(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(message, param) of pydantic's validation errors: where, what it must be and what came,
    e.g. "max_tokens: Input should be a valid integer (got str 'ten')"; a body that is not
    JSON, or not an object, said so."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}", None
    loc = [x for x in first.get("loc", ()) if x != "body"]
    if not loc:
        return "request body must be a JSON object", None
    param = str(loc[0])  # the field; a union's errors come from several types of it
    if first["type"] == "missing":
        return f"missing required field '{_path(loc)}'", _path(loc)
    said = []  # a union says what each type it tried wanted
    for e in errors:
        where = _path([x for x in e["loc"] if x != "body"])
        if where.split(".")[0].split("[")[0] == param and f"{where}: {e['msg']}" not in said:
            said.append(f"{where}: {e['msg']}")
    value = first.get("input")
    where = param if len(said) > 1 else _path(loc)
    return "; ".join(said[:3]) + f" (got {type(value).__name__} {repr(value)[:40]})", where


def _path(loc) -> str:
    """messages[0].role from ("messages", 0, "role"), without the type names a union adds."""
    out = ""
    for x in loc:
        if isinstance(x, int):
            out += f"[{x}]"
        elif x.isidentifier() and x not in ("str", "int", "float", "bool", "list", "dict"):
            out += f".{x}" if out else x
    return out
