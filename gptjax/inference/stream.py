"""Generated answers for `train.serve`: engine tokens -> OpenAI completions, whole or streamed
as server-sent events (`data: {chunk}` ... `data: [DONE]`).

A streamed answer whose client goes away is cancelled, which frees its engine slot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from gptjax.data.tokenizer import Detokenizer
from gptjax.inference import openai_api as api
from gptjax.inference.engine import Request as Generation

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "error": "error"}


async def events(served, prompts: list[list[int]], p: api.Params) -> AsyncIterator[tuple]:
    """Submit every prompt; yield (index, text delta, finish reason or None, tokens so far)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    detok = [Detokenizer(served.enc, p.stop) for _ in prompts]
    counts = [0] * len(prompts)
    live = []
    for i, prompt in enumerate(prompts):
        put = lambda tok, fin, i=i: loop.call_soon_threadsafe(queue.put_nowait, (i, tok, fin))
        gen = Generation(prompt, p.max_tokens, put, p.temperature, p.top_p, p.seed)
        live.append(served.engine.submit(gen))
    try:
        while any(r is not None for r in live):
            i, tok, fin = await queue.get()
            if live[i] is None:  # ended already at a stop string
                continue
            if fin is not None:
                live[i] = None
                yield i, detok[i].flush(), FINISH.get(fin, fin), counts[i]
                continue
            counts[i] += 1
            delta, stopped = detok[i].push(tok)
            if stopped:
                live[i].cancel()
                live[i] = None
                yield i, delta, "stop", counts[i]
            elif delta:
                yield i, delta, None, counts[i]
    finally:  # the client left, or an error: free the slots now
        for r in live:
            if r is not None:
                r.cancel()


async def answer(served, kind: str, prompts: list[list[int]], p: api.Params):
    """The whole answer as JSON, or (p.stream) a streaming response of chunks."""
    n_prompt = sum(map(len, prompts))
    if p.stream:
        return StreamingResponse(
            _sse(served, kind, prompts, p, n_prompt), media_type="text/event-stream"
        )
    texts, finish, counts = [""] * len(prompts), [None] * len(prompts), [0] * len(prompts)
    async for i, delta, fin, n in events(served, prompts, p):
        texts[i] += delta
        finish[i], counts[i] = fin or finish[i], n
    if "error" in finish:
        raise api.APIError(500, "generation failed on the server; see its log")
    choices = [_choice(kind, i, t, f) for i, (t, f) in enumerate(zip(texts, finish, strict=True))]
    return api.envelope(kind, served.name, choices, usage=api.usage(n_prompt, sum(counts)))


def _choice(kind: str, index: int, text: str, finish: str | None) -> dict:
    if kind == "text_completion":
        return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
    return {
        "index": index,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish,
    }


async def _sse(served, kind, prompts, p, n_prompt) -> AsyncIterator[str]:
    chunk_kind = kind if kind == "text_completion" else "chat.completion.chunk"
    id = api.new_id(kind)
    send = lambda choices, **extra: (
        "data: " + json.dumps(api.envelope(chunk_kind, served.name, choices, id, **extra)) + "\n\n"
    )
    if kind != "text_completion":
        yield send(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
    counts = [0] * len(prompts)
    async for i, delta, fin, n in events(served, prompts, p):
        counts[i] = n
        if kind == "text_completion":
            yield send([{"index": i, "text": delta, "finish_reason": fin, "logprobs": None}])
        else:
            yield send(
                [{"index": i, "delta": {"content": delta} if delta else {}, "finish_reason": fin}]
            )
    yield send([], usage=api.usage(n_prompt, sum(counts)))
    yield "data: [DONE]\n\n"
