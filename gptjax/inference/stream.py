"""Generated answers for `train.serve`: engine tokens -> OpenAI completions, whole or streamed
as server-sent events (`data: {chunk}` ... `data: [DONE]`).

Each choice of a request is one record (`Choice`: its engine generation and what it has said);
one formatter per API (`Completion`, `Chat`) turns choices into that API's JSON. Choice c
answers prompt c // n (its sample c % n). A streamed answer whose client goes away is
cancelled, which frees its engine slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fastapi.responses import StreamingResponse

from gptjax.data.tokenizer import Detokenizer
from gptjax.inference import openai_api as api
from gptjax.inference.engine import Request as Generation
from gptjax.inference.engine import Scored

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "error"}


@dataclass
class Choice:
    """One choice of a request: its engine generation and what has come of it so far."""

    index: int
    gen: Generation
    detok: Detokenizer
    live: bool = True  # the engine is still generating it
    tokens: int = 0  # tokens generated so far
    handed: int = 0  # of gen.scores, how many events have handed out
    last: float = 0.0  # when its previous token came (time to first token, then between tokens)
    finish: str | None = None
    text: str = ""  # a whole answer's text, gathered
    scored: list[Scored] = field(default_factory=list)  # the Scored tokens behind `text`
    said: int | None = None  # characters of text sent so far (None: no part sent yet)

    def take_scores(self, upto: int | None) -> list[Scored]:
        """The Scored entries not handed out yet, up to `upto` (the engine may be ahead)."""
        new = self.gen.scores[self.handed : upto]
        self.handed += len(new)
        return new


class Event(NamedTuple):
    """What one choice gained: its text delta, its finish reason (or None) and the Scored
    entries of the tokens behind the delta (when the request asked for log-probs; the
    end-of-text token's included)."""

    choice: Choice
    text: str
    finish: str | None
    scored: list[Scored]


class Completion:
    """OpenAI's text completions: the choice's `text`, and with log-probs its tokens'
    (tokens, token_logprobs, top_logprobs, text_offset); with echo the prompt comes first."""

    kind = chunk_kind = "text_completion"

    def __init__(self, served, p: api.Params):
        self.served, self.p = served, p

    def opening(self, choices: list[Choice]) -> list[dict]:
        return []  # a completion stream starts with text

    def part(self, c: Choice, text: str, scored: list[Scored], finish: str | None) -> dict:
        """The choice of a whole answer, or of a chunk, with `text`: a choice's first part
        carries the echoed prompt, and text_offset counts what the choice said before."""
        entries = list(scored)
        if c.said is None and self.p.echo:
            text = self.served.enc.decode(c.gen.prompt, errors="replace") + text
            entries = [c.gen.prompt[0], *c.gen.prompt_scores, *entries]
        offset = c.said or 0
        c.said = offset + len(text)
        logprobs = None
        if self.p.logprobs is not None:
            logprobs = api.text_logprobs(self.served.enc, entries, offset)
        return {"index": c.index, "text": text, "finish_reason": finish, "logprobs": logprobs}

    whole = delta = part


class Chat:
    """OpenAI's chat completions: an assistant `message` (a stream: a role chunk, then `delta`
    contents), with log-probs as `logprobs.content`; the end-of-text token is not content."""

    kind, chunk_kind = "chat.completion", "chat.completion.chunk"

    def __init__(self, served, p: api.Params):
        self.served, self.p = served, p

    def opening(self, choices: list[Choice]) -> list[dict]:
        role = {"role": "assistant", "content": ""}
        return [
            {"index": c.index, "delta": role, "finish_reason": None, "logprobs": None}
            for c in choices
        ]

    def whole(self, c: Choice, text: str, scored: list[Scored], finish: str | None) -> dict:
        message = {"role": "assistant", "content": text}
        return self._choice(c, "message", message, scored, finish)

    def delta(self, c: Choice, text: str, scored: list[Scored], finish: str | None) -> dict:
        return self._choice(c, "delta", {"content": text} if text else {}, scored, finish)

    def _choice(self, c: Choice, key: str, content: dict, scored, finish) -> dict:
        logprobs = None
        if self.p.logprobs is not None:  # the end-of-text token is not part of the content
            kept = [s for s in scored if s.token != self.served.engine.eos_id]
            logprobs = {"content": api.chat_content_logprobs(self.served.enc, kept)}
            logprobs["refusal"] = None
        return {"index": c.index, key: content, "finish_reason": finish, "logprobs": logprobs}


FORMATS = {"text_completion": Completion, "chat.completion": Chat}


def choices_of(served, prompts: list[list[int]], p: api.Params) -> list[Choice]:
    """One engine request per choice: choice c answers prompt c // n, its sample c % n drawing
    with seed + c % n."""
    gens = [
        Generation(
            prompt,
            p.max_tokens,
            None,
            p.temperature,
            p.top_p,
            (p.seed + j + 2**63) % 2**64 - 2**63,  # stays a signed 64-bit seed
            logprobs=p.logprobs,
            score_prompt=p.echo and p.logprobs is not None,
        )
        for prompt in prompts
        for j in range(p.n)
    ]
    return [Choice(i, g, Detokenizer(served.enc, p.stop)) for i, g in enumerate(gens)]


async def events(served, choices: list[Choice]) -> AsyncIterator[Event]:
    """Submit every choice's generation; yield Events until each has finished; past
    `served.timeout` seconds: 504 (slots freed)."""
    engine, metrics = served.engine, served.metrics
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    start = loop.time()
    deadline = None if served.timeout is None else start + served.timeout
    try:
        for c in choices:
            c.last = start
            c.gen.on_token = lambda tok, fin, c=c: loop.call_soon_threadsafe(
                queue.put_nowait, (c, tok, fin)
            )
            engine.submit(c.gen)
            metrics.prompt_tokens.inc(len(c.gen.prompt))
        while any(c.live for c in choices):
            c, tok, fin = await _next(queue, deadline, served.timeout)
            if not c.live:  # ended already at a stop string
                continue
            now = loop.time()
            if fin is not None:  # every score is in: the end-of-text one too
                c.live, c.finish = False, FINISH.get(fin, fin)
                _finished(metrics, c.finish, now - start)
                yield Event(c, c.detok.flush(), c.finish, c.take_scores(None))
                continue
            c.tokens += 1
            metrics.generation_tokens.inc()
            (metrics.itl if c.tokens > 1 else metrics.ttft).observe(now - c.last)
            c.last = now
            delta, stopped = c.detok.push(tok)
            if stopped:
                c.gen.cancel()
                c.live, c.finish = False, "stop"
                _finished(metrics, "stop", now - start)
                yield Event(c, delta, "stop", c.take_scores(c.tokens))
            elif delta:
                yield Event(c, delta, None, c.take_scores(c.tokens))
    finally:  # the client left, or an error: free the slots now
        for c in choices:
            if c.live:
                c.gen.cancel()


async def _next(queue: asyncio.Queue, deadline: float | None, timeout: float | None):
    if deadline is None:
        return await queue.get()
    try:
        return await asyncio.wait_for(queue.get(), deadline - asyncio.get_running_loop().time())
    except TimeoutError:
        raise api.APIError(
            504,
            f"the request took longer than the server's --timeout {timeout:g} s",
            code="timeout",
        ) from None


def _finished(metrics, reason: str, seconds: float) -> None:
    metrics.finished(reason)
    metrics.e2e.observe(seconds)


async def answer(served, kind: str, prompts: list[list[int]], p: api.Params):
    """The whole answer as JSON, or (p.stream) a streaming response of chunks; `kind`:
    text_completion or chat.completion."""
    fmt = FORMATS[kind](served, p)
    n_prompt = sum(map(len, prompts)) * p.n
    choices = choices_of(served, prompts, p)
    waiting = served.engine.waiting.qsize()
    if waiting + len(choices) > served.max_queue:
        raise api.APIError(
            429,
            f"the server is busy ({waiting} requests wait for a slot, at most "
            f"{served.max_queue}); retry later",
            code="queue_full",
            headers={"Retry-After": "1"},
        )
    if p.stream:
        return StreamingResponse(
            _sse(served, fmt, choices, n_prompt), media_type="text/event-stream"
        )
    async for e in events(served, choices):
        e.choice.text += e.text
        e.choice.scored += e.scored
    if any(c.finish == "error" for c in choices):
        raise api.APIError(500, "generation failed on the server; see its log")
    parts = [fmt.whole(c, c.text, c.scored, c.finish) for c in choices]
    used = api.usage(n_prompt, sum(c.tokens for c in choices))
    return api.envelope(fmt.kind, served.name, parts, usage=used)


async def _sse(served, fmt, choices: list[Choice], n_prompt: int) -> AsyncIterator[str]:
    """OpenAI's stream: chat's first chunk gives the role, each choice's last chunk its
    finish_reason; with stream_options.include_usage every chunk has `usage: null` and a last
    chunk (no choices) the usage; then `data: [DONE]`. An error after the first chunk is an
    `error` event, as OpenAI's client expects."""
    id = api.new_id(fmt.kind)
    usage = {"usage": None} if fmt.p.include_usage else {}
    send = lambda parts, **extra: (
        "data: "
        + json.dumps(api.envelope(fmt.chunk_kind, served.name, parts, id, **(usage | extra)))
        + "\n\n"
    )
    if opening := fmt.opening(choices):
        yield send(opening)
    try:
        async for e in events(served, choices):
            yield send([fmt.delta(e.choice, e.text, e.scored, e.finish)])
    except api.APIError as e:
        yield "data: " + json.dumps(e.body()) + "\n\n"
    else:
        if fmt.p.include_usage:
            yield send([], usage=api.usage(n_prompt, sum(c.tokens for c in choices)))
    yield "data: [DONE]\n\n"
