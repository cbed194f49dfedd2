"""A task a reward can check offline: generated arithmetic problems ("What is 47 + 38?") written
as GSM8K records, so they run through the same path and rewards as GSM8K itself
(`gptjax.data.gsm8k`): {"question": "What is 47 + 38?", "answer": "47 + 38 = 85\\n#### 85"}.

    records(n, seed, max_operand, ops)   the records, the same for the same arguments
    SPEC                                 `--data arithmetic:n=2000,max_operand=9,ops=+*,seed=0`
"""

from __future__ import annotations

import re

import numpy as np

OPS = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}
QUESTION = re.compile(r"What is (-?\d+) ([+*]) (-?\d+)\?")
SETTINGS = {"n": int, "max_operand": int, "ops": str, "seed": int}  # what `--data` may set
SPEC = "arithmetic:" + ",".join(f"{k}=..." for k in SETTINGS)


def problems(n: int, seed: int = 0, max_operand: int = 99, ops: str = "+*") -> list[str]:
    """`n` questions "What is a OP b?" with a, b in [0, max_operand] and OP from `ops`,
    drawn from `seed`; multiplications take the second operand below 10, so their answers stay
    short."""
    for op in ops:
        if op not in OPS:
            raise ValueError(
                f"arithmetic: unknown operation {op!r}; expected some of {''.join(OPS)}"
            )
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        op = ops[rng.integers(len(ops))]
        a = int(rng.integers(0, max_operand + 1))
        b = int(rng.integers(0, (max_operand if op == "+" else min(max_operand, 9)) + 1))
        out.append(f"What is {a} {op} {b}?")
    return out


def solution(question: str) -> int | None:
    """The answer to a question `problems` wrote (None: not one of them)."""
    m = QUESTION.search(question)
    if m is None:
        return None
    a, op, b = m.groups()
    return OPS[op](int(a), int(b))


def worked(question: str) -> str:
    """The worked answer in GSM8K's format: "a OP b = answer", then "#### answer"."""
    m = QUESTION.search(question)
    return f"{m[1]} {m[2]} {m[3]} = {solution(question)}\n#### {solution(question)}"


def records(n: int = 2000, seed: int = 0, max_operand: int = 99, ops: str = "+*") -> list[dict]:
    """`n` GSM8K-format records {"question", "answer"}."""
    return [{"question": q, "answer": worked(q)} for q in problems(n, seed, max_operand, ops)]


def from_spec(settings: str) -> list[dict]:
    """The records of `--data arithmetic:KEY=VALUE,...` (the part after the colon)."""
    kwargs = {}
    for item in filter(None, settings.split(",")):
        key, eq, value = item.partition("=")
        if key not in SETTINGS or not eq:
            raise ValueError(f"--data arithmetic: {item!r}: expected KEY=VALUE, KEY one of {SPEC}")
        try:
            kwargs[key] = SETTINGS[key](value)
        except ValueError:
            raise ValueError(f"--data arithmetic: {key}={value!r} is not an integer") from None
    return records(**kwargs)
