"""Tokenize a corpus into llm.c token shards, with worker processes, resumable.

    python -m train.prepare fineweb-edu-10B --out data/fineweb-edu --workers 8
    python -m train.prepare my-corpus.jsonl.gz --out data/mine --shard-tokens 10000000

Each document becomes <|endoftext|> then its GPT-2 tokens (llm.c's convention), in input order.
The first --val-tokens tokens (default: one shard's worth) go to NAME_val_000000.bin, the rest
to NAME_train_000001.bin, NAME_train_000002.bin, ... of --shard-tokens each; a document that
does not fit continues in the next shard. Prints the shards as they are written, then
`N tokens in K shards, S s: X tokens/s (Y per worker)`. A shard is written under a temporary
name and renamed; run the same command again after an interruption and it resumes at the first
missing shard. `python -m train.pretrain --data OUT` trains on the result. `--tokenizer DIR`
(`python -m train.tokenizer`) tokenizes with your own tokenizer instead of GPT-2's and keeps a
copy in OUT/tokenizer, which pretraining then uses.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tyro.conf import Positional

from gptjax.data import bpe, tokenizer
from gptjax.data.documents import documents, source_files
from gptjax.data.shards import read_shard, shard_name, write_shard
from gptjax.files import write_json
from gptjax.options import parse, run_cli

BLOCK = 256  # documents per task handed to a worker
STATE = ".prepare.json"  # progress: what was read up to the end of each shard written


@dataclass(frozen=True)
class Options:
    source: Positional[str]
    """a named dataset (the-verdict), a .txt, .jsonl(.gz) or .parquet file, a folder of them, or
    a hub dataset (fineweb-edu-10B, openwebtext)"""
    out: str = "data/shards"
    """output folder"""
    workers: int = max(1, mp.cpu_count() - 1)
    """tokenizer processes (1: in this one)"""
    shard_tokens: int = 100_000_000
    """tokens per train shard"""
    val_tokens: int | None = None
    """tokens in the val shard (unset: --shard-tokens)"""
    text_field: str = "text"
    """field or column holding the text (.jsonl, .parquet)"""
    name: str | None = None
    """shard name prefix (unset: the source's name)"""
    tokenizer: str | None = None
    """a tokenizer folder (python -m train.tokenizer; unset: GPT-2's)"""


_enc = None


def _init_worker(tokenizer_dir: str | None = None) -> None:
    global _enc
    _enc = bpe.load(tokenizer_dir) if tokenizer_dir else tokenizer.gpt2()


def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each text -> <|endoftext|> then its tokens, all in one uint16 array (one buffer to pass
    between processes, not one object per document), with each text's length."""
    if _enc is None:
        _init_worker()
    parts = [[_enc.eot_token, *_enc.encode_ordinary(t)] for t in texts]
    lengths = np.fromiter(map(len, parts), np.int64, len(parts))
    return np.fromiter(itertools.chain.from_iterable(parts), np.uint16, lengths.sum()), lengths


def split(block: tuple[np.ndarray, np.ndarray]):
    flat, lengths = block
    ends = np.cumsum(lengths)
    for start, end in zip(ends - lengths, ends, strict=True):
        yield flat[start:end]


def encoded(docs, workers: int, tokenizer_dir: str | None = None):
    """Token arrays of `docs` in order; at most 2 blocks per worker in flight (bounded memory)."""
    blocks = iter(lambda: list(itertools.islice(docs, BLOCK)), [])
    if workers <= 1:
        _init_worker(tokenizer_dir)
        for block in blocks:
            yield from split(encode(block))
        return
    # fork: workers start at once; this process never starts a JAX backend to fork mid-flight.
    with mp.get_context("fork").Pool(
        workers, initializer=_init_worker, initargs=(tokenizer_dir,)
    ) as pool:
        pending = deque()
        for block in itertools.chain(blocks, [None]):
            if block is not None:
                pending.append(pool.apply_async(encode, (block,)))
            while pending and (block is None or len(pending) >= 2 * workers):
                yield from split(pending.popleft().get())


class Writer:
    """Fills shards from the stream of token arrays and records, after each, where the next
    one starts (document index, tokens of it already written) in OUT/.prepare.json."""

    def __init__(self, out: Path, name: str, opts: Options, state: dict):
        self.out, self.name, self.state = out, name, state
        self.sizes = [opts.val_tokens or opts.shard_tokens, opts.shard_tokens]
        self.buf = np.empty(self.size, np.uint16)
        self.fill = 0

    @property
    def index(self) -> int:
        return len(self.state["shards"])

    @property
    def size(self) -> int:
        return self.sizes[min(self.index, 1)]

    def add(self, tokens: np.ndarray, doc: int, skip: int = 0) -> None:
        while skip < len(tokens):
            n = min(self.size - self.fill, len(tokens) - skip)
            self.buf[self.fill : self.fill + n] = tokens[skip : skip + n]
            self.fill, skip = self.fill + n, skip + n
            if self.fill == self.size:
                done = skip == len(tokens)
                self.flush(doc + done, 0 if done else skip)

    def flush(self, next_doc: int, next_skip: int) -> None:
        split = "val" if self.index == 0 else "train"
        path = write_shard(
            self.out / shard_name(self.name, split, self.index), self.buf[: self.fill]
        )
        self.state["shards"].append(
            {"file": path.name, "tokens": self.fill, "next_doc": next_doc, "next_skip": next_skip}
        )
        write_json(self.out / STATE, self.state)
        tqdm.write(f"{path} ({self.fill:,} tokens)")
        self.buf, self.fill = np.empty(self.size, np.uint16), 0


def start(opts: Options, out: Path, name: str) -> dict:
    """The saved progress of an earlier run with the same settings, or a fresh one."""
    settings = {k: v for k, v in asdict(opts).items() if k not in ("out", "workers")}
    path = out / STATE
    if not path.is_file():
        if any(out.glob("*.bin")):
            raise ValueError(f"{out}: holds .bin shards but no {STATE}; use an empty --out")
        return {"settings": settings, "shards": [], "finished": False}
    state = json.loads(path.read_text())
    if state.get("settings") != settings:
        raise ValueError(
            f"{out}: holds shards of another prepare ({state.get('settings')}); use another --out"
        )
    for s in state["shards"]:
        read_shard(out / s["file"])  # a damaged shard is an error, not silently reused
    return state


def prepare(opts: Options) -> dict:
    out = Path(opts.out)
    if min(opts.shard_tokens, opts.val_tokens or 1) < 1 or opts.workers < 1:
        raise ValueError("--shard-tokens, --val-tokens and --workers must be at least 1")
    files = source_files(opts.source)
    name = opts.name or Path(opts.source.removesuffix(".gz")).stem.split(".")[0]
    out.mkdir(parents=True, exist_ok=True)
    state = start(opts, out, name)
    if opts.tokenizer:  # pretraining on OUT finds it there
        bpe.keep(bpe.load(opts.tokenizer), out / "tokenizer")
    if state["finished"]:
        print(f"{out}: already prepared ({len(state['shards'])} shards); nothing to do")
        return state
    last = state["shards"][-1] if state["shards"] else {"next_doc": 0, "next_skip": 0}
    first, skip = last["next_doc"], last["next_skip"]
    docs = itertools.islice(documents(files, opts.text_field), first, None)
    writer, began, total = Writer(out, name, opts, state), time.perf_counter(), 0
    with tqdm(unit="tok", unit_scale=True, desc="tokenizing") as bar:
        for doc, tokens in enumerate(encoded(docs, opts.workers, opts.tokenizer), first):
            writer.add(tokens, doc, skip)
            total, skip = total + len(tokens), 0
            bar.update(len(tokens))
    if writer.index == 0:
        raise ValueError(
            f"{opts.source}: only {writer.fill:,} tokens, all for validation; "
            "lower --val-tokens so some are left to train on"
        )
    if writer.fill:
        writer.flush(doc + 1, 0)
    state["finished"] = True
    write_json(out / STATE, state)
    seconds = time.perf_counter() - began
    print(
        f"{total:,} tokens in {len(state['shards'])} shards, {seconds:.1f} s: "
        f"{total / seconds:,.0f} tokens/s ({total / seconds / opts.workers:,.0f} per worker, "
        f"{opts.workers} workers)"
    )
    return state


def main(argv=None) -> None:
    prepare(parse(Options, argv, __doc__))


if __name__ == "__main__":
    run_cli(main)
