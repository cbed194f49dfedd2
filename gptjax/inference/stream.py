"""Generated answers for `train.serve`: engine tokens -> OpenAI completions, whole or streamed
as server-sent events (`data: {chunk}` ... `data: [DONE]`).

Choice c of a request answers prompt c // n (its sample c % n). A streamed answer whose client
goes away is cancelled, which frees its engine slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import NamedTuple

from fastapi.responses import StreamingResponse

from gptjax.data.tokenizer import Detokenizer
from gptjax.inference import openai_api as api
from gptjax.inference.engine import Request as Generation
from gptjax.inference.engine import Scored

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "error"}


class Event(NamedTuple):
    """What one choice gained: its text delta, its finish reason (or None), how many tokens it
    has generated so far, and the Scored entries of the tokens behind this delta (when the
    request asked for log-probs; the end-of-text token's included)."""

    index: int
    text: str
    finish: str | None
    tokens: int
    scored: list[Scored]


def generations(prompts: list[list[int]], p: api.Params) -> list[Generation]:
    """One engine request per choice; sample j of a seeded request draws with seed + j."""
    return [
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


async def events(served, gens: list[Generation], stop: tuple[str, ...]) -> AsyncIterator[Event]:
    """Submit every generation; yield Events until each has finished; past `served.timeout`
    seconds: 504 (slots freed)."""
    engine, metrics = served.engine, served.metrics
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    detok = [Detokenizer(served.enc, stop) for _ in gens]
    counts, sent = [0] * len(gens), [0] * len(gens)
    start = loop.time()
    last = [start] * len(gens)
    deadline = None if served.timeout is None else start + served.timeout
    live: list[Generation | None] = []

    def scored(i: int, upto: int | None) -> list[Scored]:
        new = gens[i].scores[sent[i] : upto]  # the engine may be tokens ahead of this event
        sent[i] += len(new)
        return new

    try:
        for i, gen in enumerate(gens):
            gen.on_token = lambda tok, fin, i=i: loop.call_soon_threadsafe(
                queue.put_nowait, (i, tok, fin)
            )
            live.append(engine.submit(gen))
            metrics.prompt_tokens.inc(len(gen.prompt))
        while any(r is not None for r in live):
            i, tok, fin = await _next(queue, deadline, served.timeout)
            if live[i] is None:  # ended already at a stop string
                continue
            now = loop.time()
            if fin is not None:  # every score is in: the end-of-text one too
                live[i] = None
                _finished(metrics, FINISH.get(fin, fin), now - start)
                yield Event(i, detok[i].flush(), FINISH.get(fin, fin), counts[i], scored(i, None))
                continue
            counts[i] += 1
            metrics.generation_tokens.inc()
            (metrics.itl if counts[i] > 1 else metrics.ttft).observe(now - last[i])
            last[i] = now
            delta, stopped = detok[i].push(tok)
            if stopped:
                live[i].cancel()
                live[i] = None
                _finished(metrics, "stop", now - start)
                yield Event(i, delta, "stop", counts[i], scored(i, counts[i]))
            elif delta:
                yield Event(i, delta, None, counts[i], scored(i, counts[i]))
    finally:  # the client left, or an error: free the slots now
        for r in live:
            if r is not None:
                r.cancel()


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
    """The whole answer as JSON, or (p.stream) a streaming response of chunks."""
    n_prompt = sum(map(len, prompts)) * p.n
    gens = generations(prompts, p)
    waiting = served.engine.waiting.qsize()
    if waiting + len(gens) > served.max_queue:
        raise api.APIError(
            429,
            f"the server is busy ({waiting} requests wait for a slot, at most "
            f"{served.max_queue}); retry later",
            code="queue_full",
            headers={"Retry-After": "1"},
        )
    if p.stream:
        return StreamingResponse(
            _sse(served, kind, gens, p, n_prompt), media_type="text/event-stream"
        )
    texts, finish, counts = [""] * len(gens), [None] * len(gens), [0] * len(gens)
    scored = [[] for _ in gens]
    async for e in events(served, gens, p.stop):
        texts[e.index] += e.text
        finish[e.index], counts[e.index] = e.finish or finish[e.index], e.tokens
        scored[e.index] += e.scored
    if "error" in finish:
        raise api.APIError(500, "generation failed on the server; see its log")
    choices = []
    for i, gen in enumerate(gens):
        choices.append(_choice(kind, i, finish[i]))
        _add(served, p, choices[-1], gen, texts[i], scored[i], None)
    return api.envelope(kind, served.name, choices, usage=api.usage(n_prompt, sum(counts)))


def _choice(kind: str, index: int, finish: str | None, chunk: bool = False) -> dict:
    """An empty choice for `_add` to fill: a completion's, or chat's message (chunk: delta)."""
    out = {"index": index, "finish_reason": finish, "logprobs": None}
    if kind == "text_completion":
        return out | {"text": ""}
    return out | ({"delta": {}} if chunk else {"message": {"role": "assistant", "content": ""}})


def _add(served, p: api.Params, choice: dict, gen, text: str, scored, offset: int | None):
    """Put `text` and its log-probs into a choice (a message, or a chunk's delta). `offset`:
    how much of the choice's text came before; None for its first part, which with echo
    starts with the prompt and its log-probs. -> the length of the text added."""
    if "text" not in choice:  # chat
        part = choice["message" if "message" in choice else "delta"]
        if text or "message" in choice:
            part["content"] = text
        if p.logprobs is not None:  # the end-of-text token is not part of the content
            kept = [s for s in scored if s.token != served.engine.eos_id]
            content = api.chat_content_logprobs(served.enc, kept)
            choice["logprobs"] = {"content": content, "refusal": None}
        return len(text)
    entries = list(scored)
    if offset is None and p.echo:
        text = served.enc.decode(gen.prompt, errors="replace") + text
        entries = [gen.prompt[0], *gen.prompt_scores, *entries]
    choice["text"] = text
    if p.logprobs is not None:
        choice["logprobs"] = api.text_logprobs(served.enc, entries, offset or 0)
    return len(text)


async def _sse(served, kind, gens, p: api.Params, n_prompt: int) -> AsyncIterator[str]:
    """OpenAI's stream: chat's first chunk gives the role, each choice's last chunk its
    finish_reason; with stream_options.include_usage every chunk has `usage: null` and a last
    chunk (no choices) the usage; then `data: [DONE]`. An error after the first chunk is an
    `error` event, as OpenAI's client expects."""
    chunk_kind = kind if kind == "text_completion" else "chat.completion.chunk"
    id = api.new_id(kind)
    usage = {"usage": None} if p.include_usage else {}
    send = lambda choices, **extra: (
        "data: "
        + json.dumps(api.envelope(chunk_kind, served.name, choices, id, **(usage | extra)))
        + "\n\n"
    )
    if kind != "text_completion":
        role = {"role": "assistant", "content": ""}
        yield send([_choice(kind, i, None, True) | {"delta": role} for i in range(len(gens))])
    counts, offsets = [0] * len(gens), [None] * len(gens)
    try:
        async for e in events(served, gens, p.stop):
            counts[e.index] = e.tokens
            choice = _choice(kind, e.index, e.finish, chunk=True)
            added = _add(served, p, choice, gens[e.index], e.text, e.scored, offsets[e.index])
            offsets[e.index] = (offsets[e.index] or 0) + added
            yield send([choice])
    except api.APIError as e:
        yield "data: " + json.dumps(e.body()) + "\n\n"
    else:
        if p.include_usage:
            yield send([], usage=api.usage(n_prompt, sum(counts)))
    yield "data: [DONE]\n\n"
