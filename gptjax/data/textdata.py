"""Labelled texts for classification: the book's SMS spam splits, or any labelled file or folder.

A source is `sms-spam` (the cache's UCI SMS Spam Collection, balanced and split exactly as the
book's chapter 6), a file of examples (TSV `label<TAB>text` without a header, or CSV with a
header naming `label` and `text`) that is shuffled and cut 70/10/20, or a folder holding
`train`, `validation` and `test` files in either format. Label names are kept in order
(numerically when all are integers), so class i is `names[i]`.

Shapes: n examples, B batch, L max_length tokens.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptjax.data.cache import fetch
from gptjax.data.corpus import Shuffled
from gptjax.data.tokenizer import EOT_ID

NAMED = {"sms-spam": "sms-spam/SMSSpamCollection"}
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: np.ndarray  # int32 [n], indices into the label names


def load(source: str, *, seed: int = 123, ratios=(0.7, 0.1)) -> tuple[list[str], dict]:
    """(label names, {"train", "validation", "test"} -> Split) for a named dataset, file or
    folder (see the module docstring). A single file is shuffled with RandomState(seed) and
    cut at ratios (train, validation); the rest is the test split."""
    if source == "sms-spam":
        return sms_spam(fetch(NAMED[source]))
    path = Path(source)
    if path.is_dir():
        files = {s: _split_file(path, s) for s in SPLITS}
        rows = {s: read_labelled(f) for s, f in files.items()}
        names = label_names([label for r in rows.values() for label, _ in r], str(path))
        return names, {s: _as_split(r, names) for s, r in rows.items()}
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: no such file or folder (named datasets: {', '.join(NAMED)})"
        )
    rows = read_labelled(path)
    names = label_names([label for label, _ in rows], str(path))
    order = np.random.RandomState(seed).permutation(len(rows))
    n_train, n_val = int(len(rows) * ratios[0]), int(len(rows) * ratios[1])
    cuts = {
        "train": order[:n_train],
        "validation": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }
    return names, {s: _as_split([rows[i] for i in idx], names) for s, idx in cuts.items()}


def sms_spam(path: Path) -> tuple[list[str], dict]:
    """The book's chapter-6 data: all 747 spam and as many ham messages drawn with
    RandomState(123) (pandas' `sample(747, random_state=123)`), ham first, shuffled with
    RandomState(123) (`sample(frac=1, random_state=123)`), cut 1045 / 149 / 300."""
    rows = read_labelled(path)
    ham = [r for r in rows if r[0] == "ham"]
    spam = [r for r in rows if r[0] == "spam"]
    kept = [ham[i] for i in np.random.RandomState(123).permutation(len(ham))[: len(spam)]]
    balanced = kept + spam
    balanced = [balanced[i] for i in np.random.RandomState(123).permutation(len(balanced))]
    n_train, n_val = int(len(balanced) * 0.7), int(len(balanced) * 0.1)
    parts = {
        "train": balanced[:n_train],
        "validation": balanced[n_train : n_train + n_val],
        "test": balanced[n_train + n_val :],
    }
    names = ["ham", "spam"]
    return names, {s: _as_split(r, names) for s, r in parts.items()}


def _split_file(folder: Path, split: str) -> Path:
    found = sorted(p for p in folder.glob(f"{split}.*") if p.suffix in (".csv", ".tsv", ".txt"))
    if not found:
        raise FileNotFoundError(
            f"{folder}: no {split}.csv, {split}.tsv or {split}.txt "
            f"(a folder needs train, validation and test files)"
        )
    return found[0]


def read_labelled(path: Path) -> list[tuple[str, str]]:
    """(label, text) rows of a TSV or CSV file; a one-line error naming the file and line for
    anything unusable. Quotes are handled as pandas' default (and Python's csv) does."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text") from None
    f = io.StringIO(text, newline="")
    rows = _read_csv(path, f) if path.suffix == ".csv" else _read_tsv(path, f)
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def _read_tsv(path: Path, f) -> list[tuple[str, str]]:
    rows, reader = [], csv.reader(f, delimiter="\t")
    for fields in reader:
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"{path}, line {reader.line_num}: expected label<TAB>text")
        rows.append(_row(path, reader.line_num, fields[0], "\t".join(fields[1:])))
    return rows


def _read_csv(path: Path, f) -> list[tuple[str, str]]:
    reader = csv.reader(f)
    header = [h.strip().lower() for h in next(reader, [])]
    for column in ("label", "text"):
        if column not in header:
            raise ValueError(
                f"{path}, line 1: the header has no {column!r} column "
                f"(found: {', '.join(header) or 'nothing'})"
            )
    li, ti = header.index("label"), header.index("text")
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(header):
            raise ValueError(
                f"{path}, line {reader.line_num}: {len(fields)} fields, "
                f"the header has {len(header)}"
            )
        rows.append(_row(path, reader.line_num, fields[li], fields[ti]))
    return rows


def _row(path: Path, line: int, label: str, text: str) -> tuple[str, str]:
    label = label.strip()
    if not label:
        raise ValueError(f"{path}, line {line}: empty label")
    if not text.strip():
        raise ValueError(f"{path}, line {line}: empty text")
    return label, text


def label_names(labels: list[str], source: str) -> list[str]:
    """The classes, sorted (as numbers when every label is an integer); at least two."""
    names = sorted(set(labels))
    if all(n.lstrip("-").isdigit() for n in names):
        names.sort(key=int)
    if len(names) < 2:
        raise ValueError(f"{source}: only one class ({names[0]!r}); a classifier needs two or more")
    return names


def _as_split(rows: list[tuple[str, str]], names: list[str]) -> Split:
    index = {n: i for i, n in enumerate(names)}
    return Split([t for _, t in rows], np.array([index[label] for label, _ in rows], np.int32))


def encode(texts: list[str], enc, max_length: int | None, pad_id: int = EOT_ID) -> np.ndarray:
    """Token ids [n, L]: each text's first L tokens, right-padded with pad_id. L = max_length,
    or the longest text's length when None."""
    return pad([enc.encode_ordinary(t) for t in texts], max_length, pad_id)


def pad(ids: list[list[int]], max_length: int | None, pad_id: int = EOT_ID) -> np.ndarray:
    """Token lists -> [n, L] as `encode` does, for texts already tokenized."""
    L = max_length or max(len(x) for x in ids)
    out = np.full((len(ids), L), pad_id, np.int32)
    for i, x in enumerate(ids):
        out[i, : min(len(x), L)] = x[:L]
    return out


@dataclass
class Examples(Shuffled):
    """Encoded texts and labels as a training dataset: every batch has the same shape [B, L],
    so one compiled step serves them all."""

    tokens: np.ndarray  # int32 [n, L]
    labels: np.ndarray  # int32 [n]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """{"inputs": int32 [B, L], "labels": int32 [B]}."""
        return {"inputs": self.tokens[rows], "labels": self.labels[rows]}
