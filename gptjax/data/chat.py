"""Multi-turn chat in ChatML: conversations in OpenAI's messages format, their token ids with the
loss on assistant turns only, and the template as transformers' `apply_chat_template` reads it.

    <|im_start|>system\\nBe brief.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n
    <|im_start|>assistant\\nHello!<|im_end|>\\n

`<|im_start|>` and `<|im_end|>` are special tokens added after the tokenizer's own (the model's
embeddings grow to hold them); a reply ends at `<|im_end|>`.

Shapes: T tokens of one conversation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gptjax.data import bpe
from gptjax.data.instruct import load_entries

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOKENS = (IM_START, IM_END)
ROLES = ("system", "developer", "user", "assistant")
TEMPLATES = ("alpaca", "chatml")
# What a model tuned on chats is for (its task.json), beside instruct.TASK's Alpaca.
TASK = {"kind": "instruct", "template": "chatml"}
# The same text as `render`, for transformers (tokenizer_config.json's chat_template).
JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def template_of(task: dict | None) -> str:
    """The prompt template a model answers in (its task.json): alpaca unless it says."""
    return (task or {}).get("template", "alpaca")


def end_id(enc, template: str) -> int:
    """The token that ends a reply: <|im_end|> in ChatML, else <|endoftext|>."""
    return enc._special_tokens[IM_END] if template == "chatml" else enc.eot_token


def chat_encoding(enc):
    """`enc` with the ChatML tokens (appended after its last id when it lacks them)."""
    return bpe.with_specials(enc, TOKENS)


def render(messages: list[dict], *, add_generation_prompt: bool = False) -> str:
    """The ChatML text of `messages` (what `JINJA` renders)."""
    turns = [f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages]
    return "".join(turns) + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def encode(enc, messages: list[dict], *, add_generation_prompt: bool = False) -> list[int]:
    """The ids of `render(messages)`: special tokens as themselves, as transformers reads them."""
    text = render(messages, add_generation_prompt=add_generation_prompt)
    return enc.encode(text, allowed_special="all")


def encode_with_mask(enc, messages: list[dict]) -> tuple[list[int], np.ndarray]:
    """(ids [T], mask [T] bool): True on what the model learns to say, each assistant turn's
    content and its `<|im_end|>`; False on system and user turns and on the role headers."""
    ids, mask = [], []
    for m in messages:
        turn = encode(enc, [m])
        header = encode(enc, [m | {"content": ""}])[:-2]  # <|im_start|>role\n
        # Content opening with whitespace may merge with the header's newline: the header is
        # then the common prefix.
        start = next(
            (i for i, (a, b) in enumerate(zip(header, turn, strict=False)) if a != b), len(header)
        )
        says = m["role"] == "assistant"
        ids += turn
        mask += [False] * start + [says] * (len(turn) - start - 1) + [False]  # trailing "\n"
    return ids, np.asarray(mask, bool)


def load_conversations(source: str | Path) -> list[list[dict]]:
    """The conversations of a JSONL file, one `{"messages": [{"role", "content"}, ...]}` per
    line; a bad line is a one-line error naming the file, line and field."""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such file (expected chat JSONL)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n}: not JSON ({e})") from None
        out.append(check_messages(record, f"{path}: line {n}"))
    if not out:
        raise ValueError(f"{path}: no conversations")
    return out


def check_messages(record, where: str, reply: bool = True) -> list[dict]:
    """A record's messages, checked (`reply`: there must be an assistant turn to learn)."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ValueError(f'{where}: expected {{"messages": [{{"role", "content"}}, ...]}}')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"{where}: messages[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: messages[{i}].content must be a string")
    if reply and not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant message to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def load_prompts(source: str | Path) -> list[list[dict]]:
    """RL prompts from a JSON list or JSONL file: each record a {"prompt": text} (one user turn)
    or {"messages": [...]} ending with the user's turn; a bad record is one line."""
    out = []
    for i, record in enumerate(load_entries(str(source), required=())):
        where = f"{source}: record {i}"
        if isinstance(record.get("prompt"), str):
            out.append([{"role": "user", "content": record["prompt"]}])
            continue
        messages = check_messages(record, where, reply=False)
        if messages[-1]["role"] != "user":
            raise ValueError(f"{where}: the last message must be the user's")
        out.append(messages)
    return out


def question(messages: list[dict]) -> str:
    """The last user turn's text (what a reward is given as the prompt)."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")
