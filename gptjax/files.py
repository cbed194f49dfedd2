"""Files and folders that are whole or absent: each is written under a temporary name beside its
place and renamed into it, so a reader (or a run killed half-way) never sees half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that read it still know the
    format); when the block ends without an error it replaces `path`, otherwise it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj) -> Path:
    """Write `obj` as indented JSON, whole or not at all."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return Path(path)


def write_jsonl(path: str | Path, records) -> Path:
    """Write `records` as JSON Lines (one object a line), whole or not at all."""
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return Path(path)


@contextlib.contextmanager
def atomic_dir(directory: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `directory`; when the block ends without an error it
    replaces `directory` whole, otherwise it is removed and `directory` is left as it was."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield tmp
        replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(new: Path, final: Path) -> None:
    """Move `new` to `final`; an existing `final` is swapped out, then removed."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        new.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(final)
