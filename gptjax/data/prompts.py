"""The records RL draws its prompts from, and what each carries to the rewards.

`--data` is generated arithmetic (`arithmetic:n=2000,max_operand=9,ops=+*,seed=0`, GSM8K
records), a named hub dataset (`gsm8k`: openai/gsm8k's train split), or a JSON list / JSONL /
parquet file or a folder of them. A record is one of:

- {"prompt": text} or {"prompt": [messages]} (TRL's standard and conversational forms), with an
  optional "completion" (a worked answer);
- {"messages": [...]}: the prompt is every message up to the last user turn; an assistant turn
  after it is the worked answer;
- GSM8K's own {"question", "answer"}: the question is the prompt, the answer the worked answer.

Every other field (GSM8K's "answer" included) is a column the rewards are given, one list per
field, as TRL gives a dataset's columns to its reward functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gptjax.data import arithmetic
from gptjax.data.chat import check_messages, question
from gptjax.data.documents import fetch_hub
from gptjax.data.instruct import load_entries

# The prompt and answer fields each form takes; the rest are columns.
OWN = {"prompt", "messages", "completion", "question"}
SUFFIXES = (".json", ".jsonl", ".parquet")
# name -> (dataset repo, revision, files), fetched once into $GPTJAX_CACHE/hub/
HUB = {
    "gsm8k": ("openai/gsm8k", "main", "main/train-*.parquet"),
    "gsm8k-test": ("openai/gsm8k", "main", "main/test-*.parquet"),
}


@dataclass(frozen=True)
class Record:
    """One prompt: as the rewards see it (`prompt`: text or messages, TRL's two forms), as the
    model is asked (`messages`, ending with the user's turn), its worked answer if any, and
    its columns."""

    prompt: str | list
    messages: list[dict]
    answer: str | None = None
    columns: dict = field(default_factory=dict)


def load(source: str) -> list[Record]:
    """The records of `source` (see the module doc), in order; one-line errors naming the file
    and record."""
    if source == "arithmetic" or source.startswith("arithmetic:"):
        generated = arithmetic.from_spec(source.partition(":")[2])
        return [record(r, f"{source}: record {i}") for i, r in enumerate(generated)]
    if source in HUB:
        source = str(fetch_hub(source, HUB[source]))
    out = []
    for path in files(source):
        out += [record(r, f"{path}: record {i}") for i, r in enumerate(rows(path))]
    if not out:
        raise ValueError(f"{source}: no records")
    return out


def files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES)
        if not found:
            raise ValueError(f"{path}: no {', '.join(SUFFIXES)} files in this folder")
        return found
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: no such file or folder (or {arithmetic.SPEC}, or a named dataset: "
            f"{', '.join(HUB)})"
        )
    return [path]


def rows(path: Path) -> list[dict]:
    if path.suffix != ".parquet":
        return load_entries(str(path), required=())
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow's errors for a file that is not parquet
        raise ValueError(f"{path}: unreadable as parquet ({type(e).__name__}: {e})") from None


def record(r: dict, where: str) -> Record:
    """A raw record in any of the forms (module doc) as a `Record`."""
    columns = {k: v for k, v in r.items() if k not in OWN}
    if isinstance(r.get("question"), str) and "prompt" not in r and "messages" not in r:
        answer = r.get("answer") if isinstance(r.get("answer"), str) else None
        return Record(r["question"], [user(r["question"])], answer, columns)
    prompt = r.get("prompt")
    if isinstance(prompt, str):
        return Record(prompt, [user(prompt)], text_or_none(r.get("completion")), columns)
    if isinstance(prompt, list):
        messages = check_messages({"messages": prompt}, where, reply=False)
        return Record(messages, asked(messages, where), text_or_none(r.get("completion")), columns)
    if "messages" in r:
        messages = check_messages(r, where, reply=False)
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise ValueError(f"{where}: no user message to answer")
        head, rest = messages[: users[-1] + 1], messages[users[-1] + 1 :]
        after = [m["content"] for m in rest if m["role"] == "assistant"]
        return Record(head, head, after[0] if after else None, columns)
    raise ValueError(
        f'{where}: expected {{"prompt": ...}}, {{"messages": [...]}} or GSM8K\'s '
        f'{{"question", "answer"}}; got the fields {", ".join(map(repr, r)) or "none"}'
    )


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def asked(messages: list[dict], where: str) -> list[dict]:
    if messages[-1]["role"] != "user":
        raise ValueError(f"{where}: the prompt's last message must be the user's")
    return messages


def text_or_none(completion) -> str | None:
    """A worked answer given as text or as TRL's conversational completion (messages)."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1].get("content")
    return completion if isinstance(completion, str) else None


def columns(records: list[Record]) -> dict[str, list]:
    """The records' columns as TRL passes them: one list per field (None where a record has
    no such field)."""
    names = dict.fromkeys(k for r in records for k in r.columns)
    return {k: [r.columns.get(k) for r in records] for k in names}


def question_of(prompt) -> str:
    """A prompt's text as the earlier rewards took it: itself, or its last user turn's."""
    return prompt if isinstance(prompt, str) else question(prompt)


def text_of(completion) -> str:
    """A completion's text: a string (standard data), or TRL's conversational form, a list of
    messages whose last is the assistant's."""
    return completion if isinstance(completion, str) else completion[-1]["content"]
