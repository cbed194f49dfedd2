"""Token shards in llm.c's format, so gptjax and llm.c read each other's data.

A shard is a header of 256 int32 (magic 20240520, version 1, token count, then zeros) followed
by that many uint16 tokens. A dataset is a folder of `NAME_val_000000.bin` (validation) and
`NAME_train_000001.bin`, `NAME_train_000002.bin`, ... Shards are read through memmaps, so a
corpus of any size costs only the pages a batch touches.

Shapes: n tokens in a shard, T context tokens per window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptjax.data.corpus import Shuffled, Windows
from gptjax.data.tokenizer import EOT_ID
from gptjax.files import atomic_file

MAGIC, VERSION, HEADER = 20240520, 1, 256  # HEADER int32 values before the tokens
SHARD = re.compile(r"^(?P<name>.+)_(?P<split>train|val)_(?P<index>\d{6})\.bin$")


def shard_name(name: str, split: str, index: int) -> str:
    return f"{name}_{split}_{index:06d}.bin"


def write_shard(path: str | Path, tokens: np.ndarray) -> Path:
    """Write tokens [n] (each < 65536) as an llm.c shard, under a temporary name then renamed:
    a shard on disk is always whole."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 1 << 16):
        raise ValueError(f"{path}: token ids must fit in uint16")
    header = np.zeros(HEADER, np.int32)
    header[:3] = MAGIC, VERSION, tokens.size
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())
    return path


def read_shard(path: str | Path) -> np.memmap:
    """A shard's tokens as a read-only uint16 memmap [n]; a one-line error naming the file if
    the header or the size is wrong."""
    path = Path(path)
    size = path.stat().st_size
    if size < 4 * HEADER:
        raise ValueError(
            f"{path}: not an llm.c token shard (only {size} bytes, header is {4 * HEADER})"
        )
    header = np.fromfile(path, np.int32, HEADER)
    if header[0] != MAGIC:
        raise ValueError(f"{path}: not an llm.c token shard (magic {header[0]}, expected {MAGIC})")
    if header[1] != VERSION:
        raise ValueError(f"{path}: llm.c shard version {header[1]}, expected {VERSION}")
    n = int(header[2])
    if size != 4 * HEADER + 2 * n:
        raise ValueError(
            f"{path}: truncated or padded shard: header says {n} tokens "
            f"({4 * HEADER + 2 * n} bytes), file has {size} bytes"
        )
    return np.memmap(path, np.uint16, "r", offset=4 * HEADER, shape=(n,))


def shard_files(folder: str | Path) -> dict[str, list[Path]]:
    """{"train": [...], "val": [...]}: a folder's shards in index order."""
    found: dict[str, list[tuple[int, Path]]] = {"train": [], "val": []}
    for p in Path(folder).iterdir():
        if m := SHARD.match(p.name):
            found[m["split"]].append((int(m["index"]), p))
    return {split: [p for _, p in sorted(files)] for split, files in found.items()}


def is_shard_dir(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(shard_files(folder).values())


@dataclass
class ShardWindows(Shuffled):
    """`Windows` of T tokens (stride T) over several shards, none crossing a shard's end;
    shuffled per epoch by `Shuffled`, so a batch is a function of seed and step."""

    shards: list  # [n_i] uint16 memmaps
    T: int
    name: str = "shards"
    align: bool = False  # windows start at document starts (`corpus.aligned_starts`)
    eot: int = EOT_ID  # the tokenizer's <|endoftext|>

    def __post_init__(self):
        fits = [s for s in self.shards if len(s) > self.T]
        self.parts = [Windows(s, self.T, self.T, align=self.align, eot=self.eot) for s in fits]
        if not self.parts:
            raise ValueError(f"{self.name}: too short: no shard holds {self.T + 1} tokens")
        self.first = np.cumsum([0] + [len(p) for p in self.parts])  # first window of each part

    def __len__(self) -> int:
        return int(self.first[-1])

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Windows `rows` as {"inputs", "targets"}: int32 [B, T], read shard by shard."""
        part = np.searchsorted(self.first, rows, side="right") - 1
        out = {k: np.empty((len(rows), self.T), np.int32) for k in ("inputs", "targets")}
        for p in np.unique(part):
            here = part == p
            for k, v in self.parts[p].batch(rows[here] - self.first[p]).items():
                out[k][here] = v
        return out


def shard_windows(
    folder: str | Path, T: int, align: bool = False, eot: int = EOT_ID
) -> tuple[ShardWindows, ShardWindows]:
    """(train, val) windows of a shard folder; a clear error when a split is missing.
    `align`: training windows start at document starts (each `eot`)."""
    files = shard_files(folder)
    for split in ("train", "val"):
        if not files[split]:
            raise ValueError(f"{folder}: no NAME_{split}_NNNNNN.bin shard")
    return tuple(
        ShardWindows(
            [read_shard(p) for p in files[split]],
            T,
            f"{folder} ({split} shards)",
            align=align and split == "train",
            eot=eot,
        )
        for split in ("train", "val")
    )
