"""Instruction data (the book's chapter 7): the Alpaca prompt template, the book's collate
function, bucketed lengths for jit, and instruction / preference files.

Shapes: B batch, T tokens (a bucket length).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gptjax.data import IGNORE
from gptjax.data.cache import fetch
from gptjax.data.corpus import Shuffled
from gptjax.data.lengths import padded_length
from gptjax.data.tokenizer import EOT_ID

NAMED = {
    "instruction-data": "instruction-data.json",
    "instruction-data-with-preference": "instruction-data-with-preference.json",
}
RESPONSE = "\n\n### Response:\n"
# What a model tuned on this template is for (its task.json): it answers in the template.
TASK = {"kind": "instruct", "template": "alpaca"}


def format_prompt(entry: dict) -> str:
    """The book's Alpaca template: instruction, then the input only when it is not empty."""
    text = (
        "Below is an instruction that describes a task. Write a response that appropriately "
        f"completes the request.\n\n### Instruction:\n{entry['instruction']}"
    )
    return text + (f"\n\n### Input:\n{entry['input']}" if entry.get("input") else "")


def training_text(entry: dict, response: str | None = None) -> str:
    """Prompt, the response header, and the response (`entry["output"]` unless given)."""
    return format_prompt(entry) + RESPONSE + (entry["output"] if response is None else response)


def prompt_text(entry: dict) -> str:
    """What a model tuned on the template is given to answer: the prompt and the response
    header."""
    return format_prompt(entry) + RESPONSE


def response_of(generated: str) -> str:
    """The answer in text the model wrote after a prompt ending in the response header."""
    return generated.removeprefix("### Response:").split("<|endoftext|>")[0].strip()


def collate(
    token_lists,
    *,
    pad_id=EOT_ID,
    ignore=IGNORE,
    max_length=None,
    prompt_lengths=None,
    masks=None,
):
    """The book's `custom_collate_fn`: {"inputs", "targets"} int32 [B, T].

    Each sequence gets one pad_id appended (the end-of-text the model learns to emit), all are
    padded with pad_id to the longest + 1, inputs are all but the last position and targets the
    sequence shifted by one; every target after a sequence's end-of-text is `ignore` (decided by
    length, not by token value), as are the first prompt_length - 1 targets of a row when
    `prompt_lengths` is given (training on responses only); with `masks` (bool per token, e.g.
    `chat.encode_with_mask`'s) a target counts only where its token's mask is True, and the
    appended pad_id never does (a conversation ends in its own end-of-turn token); then both
    are cut to max_length.
    """
    T = max(len(t) for t in token_lists)  # = the longest + 1, minus the shift
    inputs = np.full((len(token_lists), T), pad_id, np.int32)
    targets = np.full((len(token_lists), T), ignore, np.int32)
    for b, tokens in enumerate(token_lists):
        n = len(tokens)
        inputs[b, :n] = tokens
        targets[b, : n - 1] = tokens[1:]
        targets[b, n - 1] = pad_id
        if prompt_lengths is not None:
            targets[b, : max(prompt_lengths[b] - 1, 0)] = ignore
        if masks is not None:
            keep = np.append(np.asarray(masks[b][1:], bool), False)
            targets[b, :n] = np.where(keep, targets[b, :n], ignore)
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return {"inputs": inputs, "targets": targets}


def bucket(T: int, limit: int) -> int:
    """The bucket length of a batch whose longest row has T tokens: 64, 128, 256, ... (capped at
    `limit`), so a jitted step compiles once per bucket rather than once per batch length."""
    return padded_length(T, limit, least=64)


def pad_to(batch: dict, T: int, pad_id=EOT_ID, ignore=IGNORE) -> dict:
    """Pad a collated batch on the right to length T (pads are ignored targets: harmless)."""
    extra = T - batch["inputs"].shape[1]
    return {
        "inputs": np.pad(batch["inputs"], ((0, 0), (0, extra)), constant_values=pad_id),
        "targets": np.pad(batch["targets"], ((0, 0), (0, extra)), constant_values=ignore),
    }


def load_entries(source: str, required=("instruction", "output")) -> list[dict]:
    """Records of a named dataset or a JSON list / JSONL file; a bad record is a one-line error
    naming the file and the record's index."""
    path = fetch(NAMED[source]) if source in NAMED else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such file (named datasets: {', '.join(NAMED)})")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            entries = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON list or JSONL file ({e})") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of records")
    for i, e in enumerate(entries):
        check_entry(e, i, path, required)
    return entries


def check_entry(entry, i: int, path: Path, required) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: record {i}: expected an object, got {type(entry).__name__}")
    for key in (*required, "input"):
        if key not in entry:
            if key == "input":
                continue
            raise ValueError(f"{path}: record {i}: missing key {key!r}")
        if not isinstance(entry[key], str):
            raise ValueError(
                f"{path}: record {i}: {key!r} must be a string, got {type(entry[key]).__name__}"
            )
    for key in required:
        if key != "input" and not entry[key].strip():
            raise ValueError(f"{path}: record {i}: empty {key!r}")


def split(entries: list, train_ratio=0.85, test_ratio=0.1) -> dict[str, list]:
    """The book's split, in file order (no shuffle): train, test, then validation the rest
    (1,100 records -> 935 / 110 / 55)."""
    n_train, n_test = int(len(entries) * train_ratio), int(len(entries) * test_ratio)
    return {
        "train": entries[:n_train],
        "test": entries[n_train : n_train + n_test],
        "validation": entries[n_train + n_test :],
    }


class Sequences(Shuffled):
    """Tokenized examples as a training dataset: batches are collated like the book's and padded
    on the right up to a bucket length, so an epoch compiles a handful of step programs."""

    def __init__(
        self,
        tokens: list,
        max_length: int,
        prompt_lengths: list | None = None,
        *,
        masks: list | None = None,
        pad_id: int = EOT_ID,
    ):
        self.tokens, self.max_length, self.prompt_lengths = tokens, max_length, prompt_lengths
        self.masks, self.pad_id = masks, pad_id

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, rows) -> dict[str, np.ndarray]:
        """{"inputs", "targets"}: int32 [B, T], T a bucket length <= max_length."""
        lengths = None if self.prompt_lengths is None else [self.prompt_lengths[r] for r in rows]
        masks = None if self.masks is None else [self.masks[r] for r in rows]
        b = collate(
            [self.tokens[r] for r in rows],
            max_length=self.max_length,
            prompt_lengths=lengths,
            masks=masks,
            pad_id=self.pad_id,
        )
        return pad_to(b, bucket(b["inputs"].shape[1], self.max_length), self.pad_id)

    def buckets(self, B: int, *, seed: int, epoch: int = 0) -> dict[int, int]:
        """{bucket length: batches} over one epoch: how many step programs it compiles."""
        out: dict[int, int] = {}
        for i in range(self.batches_per_epoch(B)):
            rows = self.rows(epoch, i, B, seed=seed, shuffle=True)
            T = bucket(
                min(max(len(self.tokens[r]) for r in rows), self.max_length), self.max_length
            )
            out[T] = out.get(T, 0) + 1
        return dict(sorted(out.items()))
