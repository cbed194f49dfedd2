"""Pretraining text at any scale: tokenized once into a uint16 token file, then read as windows
through a memmap, so a corpus never has to fit in memory.

A source is anything `documents` reads: a named dataset (`the-verdict`), a `.txt` file (one
document), a `.jsonl(.gz)` or `.parquet` file (each record's `text_field` one document), or a
folder of them. Every document ends in `<|endoftext|>`, except a source that is one `.txt`
file. Its token file lives in `$GPTJAX_CACHE/tokens/`, named by a hash of the source's paths,
sizes and modification times (and the text field), and is reused next time. `split_documents`
keeps whole documents on each side of the train/validation cut; `Windows(..., align=True)`
starts windows at document starts.

Shapes: N windows, B batch, T context tokens per window.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gptjax.data.bpe import fingerprint, is_gpt2
from gptjax.data.cache import cache_dir
from gptjax.data.documents import pieces, source_files
from gptjax.data.tokenizer import EOT_ID, gpt2
from gptjax.files import atomic_file, write_json


def token_file(source: str, *, progress: bool = True, enc=None, text_field: str = "text") -> Path:
    """Path of the uint16 token file for `source`, tokenizing it first if needed with `enc`
    (None: GPT-2's BPE): every document followed by `<|endoftext|>`, except in a source that
    is a single .txt file (one document, as it is)."""
    files = source_files(source)
    plain = len(files) == 1 and files[0].name.endswith(".txt") and not Path(source).is_dir()
    key = hashlib.sha256(b"" if plain else b"documents end in eot\n")
    if not all(f.name.endswith(".txt") for f in files):  # records: which field was read
        key.update(f"text field {text_field}\n".encode())
    if enc is not None and not is_gpt2(enc):  # GPT-2's files keep their names
        key.update(json.dumps(fingerprint(enc), sort_keys=True).encode())
    for f in files:
        st = f.stat()
        key.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    out = cache_dir() / "tokens" / f"{key.hexdigest()[:24]}.bin"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    enc = enc or gpt2()
    # the bar counts text bytes: a .txt file's size; records' text is not known ahead
    total = sum(f.stat().st_size for f in files) if all(f.suffix == ".txt" for f in files) else None
    with (
        atomic_file(out) as tmp,
        open(tmp, "wb") as sink,
        tqdm(
            total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress
        ) as bar,
    ):
        for piece, end in pieces(files, text_field):
            sink.write(np.asarray(enc.encode_ordinary(piece), np.uint16).tobytes())
            bar.update(len(piece.encode()))
            if end and not plain:
                sink.write(np.array([enc.eot_token], np.uint16).tobytes())
    write_json(out.with_suffix(".json"), {"files": [str(f) for f in files]})
    return out


def load_tokens(source: str, *, progress: bool = True, enc=None, text_field="text") -> np.memmap:
    """All of `source`'s tokens (by `enc`, None: GPT-2's) as a read-only uint16 memmap [n]."""
    path = token_file(source, progress=progress, enc=enc, text_field=text_field)
    if path.stat().st_size == 0:
        raise ValueError(f"{source}: no text to train on (empty)")
    return np.memmap(path, dtype=np.uint16, mode="r")


class Shuffled:
    """A dataset of `len(self)` examples read in a fresh order each epoch; subclasses give
    `__len__` and `batch(rows)`."""

    def batches_per_epoch(self, B: int) -> int:
        return len(self) // B  # the last partial batch is dropped

    def rows(self, epoch: int, index: int, B: int, *, seed: int, shuffle: bool) -> np.ndarray:
        """Row indices of batch `index` of `epoch`: a function of (seed, epoch) only."""
        return epoch_rows(len(self), epoch, index, B, seed=seed, shuffle=shuffle)


def document_starts(tokens: np.ndarray, eot: int = EOT_ID) -> np.ndarray:
    """Where each document of `tokens` [n] begins: 0 and every position after an
    `<|endoftext|>` (id `eot`; except the end). int64 [documents], ascending."""
    after = np.flatnonzero(np.asarray(tokens) == eot) + 1
    return np.concatenate([[0], after[after < len(tokens)]]).astype(np.int64)


def split_documents(
    tokens: np.ndarray, train_ratio: float, eot: int = EOT_ID
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) token arrays: the cut falls on the document start nearest
    `train_ratio` of the tokens, so each side holds whole documents (the same ones every run).
    A source of one document is cut at `train_ratio` itself."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    at = int(train_ratio * len(tokens))
    starts = document_starts(tokens, eot)[1:]
    if len(starts):
        at = int(starts[np.argmin(np.abs(starts - at))])
    return tokens[:at], tokens[at:]


def aligned_starts(tokens: np.ndarray, T: int, eot: int = EOT_ID) -> np.ndarray:
    """Window starts that cut every document into windows of T from its `<|endoftext|>` (or
    the start of `tokens`), so each window's first target is a document's first token, predicted
    from the separator alone as from a BOS (the speedrun's batches); the last window of a
    document runs on into the next. No document begins mid-window."""
    at_eot = np.flatnonzero(np.asarray(tokens) == eot)
    starts = np.unique(np.concatenate([[0], at_eot])).astype(np.int64)
    ends = np.append(starts[1:], len(tokens))
    counts = -(-(ends - starts) // T)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # each window's document's first
    at = np.repeat(starts, counts) + (np.arange(counts.sum()) - first) * T
    return at[at + T < len(tokens)]


@dataclass
class Windows(Shuffled):
    """Sliding windows of T tokens over a token array, read lazily, shuffled per epoch.
    `align`: windows start at document starts (`aligned_starts`) instead of every `stride`."""

    tokens: np.ndarray  # [n] (usually a memmap)
    T: int
    stride: int
    name: str = "data"
    align: bool = False
    eot: int = EOT_ID  # the tokenizer's <|endoftext|>, where documents start (align)

    def __post_init__(self):
        if self.T < 1 or self.stride < 1:
            raise ValueError(f"window length and stride must be >= 1, got {self.T}, {self.stride}")
        if len(self.tokens) < self.T + 1:
            raise ValueError(
                f"{self.name}: too short: {len(self.tokens)} tokens, but one window of "
                f"{self.T} needs {self.T + 1}"
            )
        if self.align:
            self.starts = aligned_starts(self.tokens, self.T, self.eot)
        else:
            self.starts = np.arange(0, len(self.tokens) - self.T, self.stride)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Windows at `rows` (indices into starts) as {"inputs", "targets"}: int32 [B, T]."""
        idx = self.starts[rows][:, None] + np.arange(self.T + 1)[None, :]
        ids = np.asarray(self.tokens[idx], np.int32)
        return {"inputs": ids[:, :-1], "targets": ids[:, 1:]}


@functools.lru_cache(maxsize=4)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of n examples in `epoch`: a permutation drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_rows(n: int, epoch: int, index: int, B: int, *, seed: int, shuffle: bool) -> np.ndarray:
    """Rows of batch `index` of `epoch` out of n examples: each epoch is its own permutation of
    range(n) drawn from (seed, epoch), so any step's batch can be recomputed on resume."""
    sl = slice(index * B, (index + 1) * B)
    return epoch_order(n, seed, epoch)[sl] if shuffle else np.arange(n)[sl]
