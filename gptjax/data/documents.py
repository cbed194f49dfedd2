"""The one reader of a text source: its documents, in a fixed order, whole or in pieces.

A source is a named dataset in the cache (`NAMED`: the-verdict), a `.txt` file (one document,
read in pieces of about 4M characters cut at line ends), a `.jsonl` / `.jsonl.gz` file (one
JSON object per line, its text under `text_field`), a `.parquet` file (column `text_field`,
read one row group at a time), a folder of such files (sorted by path, recursively), or a named
dataset on the Hugging Face hub (`HUB`), fetched once into `$GPTJAX_CACHE/hub/` with resume and
progress bars. Pretraining (`corpus.token_file`), `prepare` and the tokenizer all read through
here, so they take the same sources with the same rules and errors.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from gptjax.data.cache import cache_dir, fetch
from gptjax.errors import first_line

NAMED = {"the-verdict": "the-verdict.txt"}  # name -> file of the download cache
SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
CHUNK_CHARS = 1 << 22  # a .txt file is read in ~4M-character pieces cut at line ends
# name -> (dataset repo, revision, files): the corpora of build-nanogpt and nanoGPT.
HUB = {
    "fineweb-edu-10B": ("HuggingFaceFW/fineweb-edu", "main", "sample/10BT/*.parquet"),
    "openwebtext": ("Skylion007/openwebtext", "refs/convert/parquet", "plain_text/train/*.parquet"),
}


def source_files(source: str) -> list[Path]:
    """The files of a source (see the module doc); a clear error when there are none."""
    if source in NAMED:
        return [fetch(NAMED[source])]
    if source in HUB:
        return source_files(str(fetch_hub(source)))
    path = Path(source)
    if path.is_file():
        if not path.name.endswith(SUFFIXES):
            raise ValueError(f"{path}: expected a {', '.join(SUFFIXES)} file")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
        if not files:
            raise ValueError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
        return files
    names = ", ".join([*NAMED, *HUB])
    raise FileNotFoundError(f"{source}: no such file or folder (named datasets: {names})")


def documents(files: list[Path], text_field: str = "text") -> Iterator[str]:
    """Every document of `files`, in order, whole."""
    parts = []
    for piece, end in pieces(files, text_field):
        parts.append(piece)
        if end:
            yield "".join(parts)
            parts = []


def pieces(files: list[Path], text_field: str = "text") -> Iterator[tuple[str, bool]]:
    """Every document of `files`, in order, as (text, whether it ends a document): a .txt file
    in pieces (so no file has to fit in memory), a record or row whole."""
    for path in files:
        if path.name.endswith(".txt"):
            yield from ((piece, False) for piece in _txt_pieces(path))
            yield "", True
        elif path.name.endswith(".parquet"):
            yield from ((doc, True) for doc in _parquet(path, text_field))
        else:
            yield from ((doc, True) for doc in _jsonl(path, text_field))


def _txt_pieces(path: Path) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            while piece := f.read(CHUNK_CHARS):
                yield piece + f.readline()  # finish the line so no word is cut in two
    except (UnicodeDecodeError, PermissionError) as e:
        raise ValueError(f"{path}: unreadable as UTF-8 text ({e})") from None


def _jsonl(path: Path, field: str) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield _text_of(line, field, f"{path}:{n}")
    except (OSError, EOFError, UnicodeDecodeError) as e:  # a truncated .gz, bad bytes
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _text_of(line: str, field: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not a JSON object ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get(field), str):
        raise ValueError(f"{where}: no string field {field!r} (set --text-field)")
    return record[field]


def _parquet(path: Path, field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's errors for a file that is not parquet
        raise ValueError(f"{path}: not a parquet file ({e})") from None
    if field not in pf.schema_arrow.names:
        raise ValueError(
            f"{path}: no column {field!r} (columns: "
            f"{', '.join(pf.schema_arrow.names)}; set --text-field)"
        )
    for i in range(pf.num_row_groups):
        yield from pf.read_row_group(i, columns=[field]).column(0).to_pylist()


def fetch_hub(name: str, where: tuple[str, str, str] | None = None) -> Path:
    """Download (or finish downloading) a named hub dataset into the cache; its folder.
    `where`: its (repo, revision, files), when it is not one of `HUB`."""
    from huggingface_hub import snapshot_download

    repo, revision, pattern = where or HUB[name]
    folder = cache_dir() / "hub" / name
    try:
        snapshot_download(
            repo, repo_type="dataset", revision=revision, allow_patterns=pattern, local_dir=folder
        )
    except Exception as e:  # no network, no such repo: say which and why, in one line
        raise ValueError(
            f"{name}: could not fetch {repo}@{revision} ({pattern}) from the "
            f"Hugging Face hub: {first_line(e)}"
        ) from None
    return folder
