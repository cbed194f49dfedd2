"""Load test of `train.serve` on loopback: N requests from C concurrent `openai` clients.

    python -m train.bench.serve_load --preset tiny --requests 200 --clients 16 --slots 8 1
    python -m train.bench.serve_load --soak --requests 1000 --slots 8

For each --slots value it starts the server in this process on 127.0.0.1 (a free port), warms
it up, sends the requests (greedy, prompts of different lengths), checks every answer equals
the prompt's greedy answer alone (`gptjax.generate`), and prints one row per setting:

    slots  requests  answered  equal  p50 s  p99 s  tokens/s  wall s

--soak streams every fifth request and hangs up after its first chunk (`answered` counts the
others), then checks every slot came back and prints the process's resident memory before
and after.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import openai

from gptjax.config import PRESETS
from gptjax.data import tokenizer
from gptjax.inference import generation
from gptjax.inference.engine import Engine
from gptjax.inference.metrics import Metrics
from gptjax.inference.server import Background, create_app, open_served
from gptjax.options import parse, run_cli

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum"


@dataclass(frozen=True)
class Options:
    ckpt: str | None = None
    """checkpoint to serve (unset: random weights of --preset)"""
    preset: Literal[*PRESETS] = "tiny"
    """model size when no --ckpt is given"""
    requests: int = 200
    """requests to send"""
    clients: int = 16
    """concurrent clients"""
    slots: tuple[int, ...] = (8, 1)
    """server --slots values to compare"""
    max_tokens: int = 32
    """tokens per answer"""
    prompts: int = 20
    """distinct prompts, cycled"""
    soak: bool = False
    """cancel every fifth request mid-stream; print resident memory before and after"""


def prompts(n: int) -> list[str]:
    """n prompts of 3 to ~40 words, the same every run."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS.split(), 3 + 2 * i)).capitalize() for i in range(n)]


def expected(served, texts: list[str], max_tokens: int) -> list[str]:
    """Each prompt's greedy answer alone (rows of a ragged batch equal each prompt alone)."""
    ids = [served.enc.encode(t) for t in texts]
    rows = generation.generate(
        served.cfg, served.engine.params, ids, max_new_tokens=max_tokens, eos_id=tokenizer.EOT_ID
    )
    return [
        served.enc.decode(generation.completion(row, max_tokens, tokenizer.EOT_ID)) for row in rows
    ]


def run(url: str, model: str, texts: list[str], opts: Options) -> tuple[list, float]:
    """Send opts.requests requests from opts.clients threads: ([(i, text, tokens, s)], wall s)."""
    clients = [
        openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=600)
        for _ in range(opts.clients)
    ]

    def one(i: int):
        start = time.perf_counter()
        ask = dict(model=model, prompt=texts[i % len(texts)], max_tokens=opts.max_tokens)
        if opts.soak and i % 5 == 4:  # hang up after the first chunk
            with clients[i % opts.clients].completions.create(
                **ask, temperature=0, stream=True
            ) as s:
                next(iter(s))
            return None
        r = clients[i % opts.clients].completions.create(**ask, temperature=0)
        return i, r.choices[0].text, r.usage.completion_tokens, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(opts.clients) as pool:
        results = [r for r in pool.map(one, range(opts.requests)) if r is not None]
    return results, time.perf_counter() - start


def rss_mib() -> float:
    """This process's resident memory now (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def with_slots(served, slots: int, max_queue: int):
    """The same model behind a fresh engine of `slots` rows."""
    old = served.engine
    engine = Engine(served.cfg, old.params, slots=slots, eos_id=old.eos_id, dtype=old.dtype)
    metrics = Metrics(served.name, engine)
    return replace(served, engine=engine, metrics=metrics, max_queue=max_queue)


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    texts = prompts(opts.prompts)
    served = open_served(opts.ckpt, opts.preset, slots=1)
    want = expected(served, texts, opts.max_tokens)
    print(
        f"{served.name}: {opts.requests} requests, {opts.clients} clients, "
        f"{opts.max_tokens} tokens each, {len(texts)} prompts of "
        f"{min(map(len, map(served.enc.encode, texts)))}-"
        f"{max(map(len, map(served.enc.encode, texts)))} tokens",
        flush=True,
    )
    print("slots  requests  answered  equal  p50 s  p99 s  tokens/s  wall s")
    ok = True
    for slots in opts.slots:
        served = with_slots(served, slots, max_queue=opts.requests)  # no 429s here
        with Background(create_app(served)) as url:
            run(url, served.name, texts, replace(opts, requests=2 * opts.clients))  # compile
            before = rss_mib()
            results, wall = run(url, served.name, texts, opts)
            ok &= settled(served.engine)
            after = rss_mib()
        equal = sum(text == want[i % len(texts)] for i, text, _, _ in results)
        lat = sorted(s for *_, s in results)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        tokens = sum(n for _, _, n, _ in results)
        print(
            f"{slots:5d}  {opts.requests:8d}  {len(results):8d}  {equal:5d}  "
            f"{statistics.median(lat):5.2f}  {p99:5.2f}  {tokens / wall:8.1f}  {wall:6.1f}",
            flush=True,
        )
        sent = opts.requests - (opts.requests // 5 if opts.soak else 0)
        ok &= equal == len(results) == sent
        if opts.soak:
            print(f"resident memory: {before:.0f} MiB before, {after:.0f} MiB after", flush=True)
    if not ok:
        sys.exit("some answers were lost or differ from the prompt's answer alone")


def settled(engine, seconds: float = 30) -> bool:
    """Whether every slot is free again (hung-up requests included) within `seconds`."""
    deadline = time.monotonic() + seconds
    while engine.free() < len(engine.busy) and time.monotonic() < deadline:
        time.sleep(0.05)
    if engine.free() < len(engine.busy):
        print(f"{len(engine.busy) - engine.free()} slots still busy", flush=True)
        return False
    return True


if __name__ == "__main__":
    run_cli(main)
