"""GSM8K's format and its standard rewards, in TRL's form.

A GSM8K record is {"question": ..., "answer": worked solution ending "#### N"}; the gold answer
is N (commas and a leading "$" dropped). A completion's answer is the number after its last
"####", or else its last number (lm-eval's strict and flexible matches). Rewards are called as
TRL calls them, once per batch: `fn(prompts=..., completions=..., answer=[...], **more)`:

    python -m train.rl --data gsm8k.jsonl --reward gptjax.data.gsm8k:correct \
        --reward gptjax.data.gsm8k:formatted --reward-weights 1 0.2

`correct`: 1.0 when the completion's answer equals the gold one (as numbers), else 0;
`formatted`: 1.0 when the completion ends with a "#### N" line, else 0.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from gptjax.data.prompts import text_of

NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+")
MARKED = re.compile(r"####\s*(-?\$?\s?[\d,]*\.?\d+)")
FINAL_LINE = re.compile(r"####\s*-?\$?\s?[\d,]*\.?\d+\s*$")


def number(text: str) -> Decimal | None:
    """ "1,234", "-$5", "$ 3.50", "7." as a number; None when it is not one."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def gold(answer: str) -> Decimal | None:
    """The number after "####" in a GSM8K answer (None: there is none)."""
    found = MARKED.findall(answer)
    return number(found[-1]) if found else None


def extract(completion: str) -> Decimal | None:
    """A completion's answer: the number after its last "####", else its last number."""
    found = MARKED.findall(completion) or NUMBER.findall(completion)
    return number(found[-1]) if found else None


def correct(completions, answer, **_) -> list[float | None]:
    """1.0 where the completion's answer equals the record's gold answer (as numbers), else
    0.0; None for a record whose `answer` is no text ending "#### N" (not applicable)."""
    out = []
    for completion, truth in zip(completions, answer, strict=True):
        want = gold(truth) if isinstance(truth, str) else None
        out.append(None if want is None else float(extract(text_of(completion)) == want))
    return out


def formatted(completions, **_) -> list[float]:
    """1.0 where the completion ends with a "#### N" line (GSM8K's answer format), else 0.0."""
    return [float(bool(FINAL_LINE.search(text_of(c)))) for c in completions]
