"""How an exception from below (orbax, tensorstore, W&B, a YAML parser, ...) is said in our
one-line errors: its type and the first line of its message, cut short."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 300) -> str:
    """`ValueError: the first line of the message` (at most `limit` characters of it), or the
    type's name alone when the message is empty."""
    text = str(error).strip()
    line = text.splitlines()[0][:limit] if text else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
