"""A task a reward can check offline: generated arithmetic problems ("What is 47 + 38?") whose
answer is the last number of the reply ("47 + 38 = 85").

    problems(n, seed, max_operand)   questions, the same for the same arguments
    conversations(...)               the questions with worked answers, for SFT on the format
    reward(prompt, completion)       1.0 when the completion's last number is the answer, else 0

`reward` is what `python -m train.rl --reward gptjax.data.arithmetic:reward` calls.
"""

from __future__ import annotations

import re

import numpy as np

OPS = {"+": lambda a, b: a + b, "*": lambda a, b: a * b}
QUESTION = re.compile(r"What is (-?\d+) ([+*]) (-?\d+)\?")
NUMBER = re.compile(r"-?\d+")


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
    """The reply SFT teaches: "a OP b = answer"."""
    m = QUESTION.search(question)
    return f"{m[1]} {m[2]} {m[3]} = {solution(question)}"


def conversations(n: int, seed: int = 0, max_operand: int = 99, ops: str = "+*") -> list:
    """`n` user/assistant exchanges in OpenAI's messages format."""
    return [
        [{"role": "user", "content": q}, {"role": "assistant", "content": worked(q)}]
        for q in problems(n, seed, max_operand, ops)
    ]


def reward(prompt: str, completion: str) -> float:
    """1.0 when the last number in `completion` is the answer to the question in `prompt`."""
    truth = solution(prompt)
    if truth is None:
        raise ValueError(f"arithmetic reward: no 'What is a + b?' question in {prompt[:60]!r}")
    numbers = NUMBER.findall(completion)
    return float(bool(numbers) and int(numbers[-1]) == truth)
