"""Reward functions for RL, named by a `module:function` path: `fn(prompt, completion) -> float`
(`gptjax.data.arithmetic:reward`, or one of your own on the Python path)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import numpy as np

Reward = Callable[[str, str], float]


def load_reward(path: str) -> Reward:
    """The function a `module:function` path names; a one-line error naming the path otherwise."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"--reward {path!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ValueError(f"--reward {path!r}: cannot import {module} ({e})") from None
    except AttributeError:
        raise ValueError(f"--reward {path!r}: {module} has no {name}") from None
    if not callable(fn):
        raise ValueError(f"--reward {path!r}: {module}.{name} is not callable")
    return fn


def score(fn: Reward, path: str, prompts: list[str], completions: list[str]) -> np.ndarray:
    """float32 [n]: `fn` of each (prompt, completion); a value that is not a finite number stops
    the run with one line naming the reward and the prompt."""
    out = []
    for prompt, text in zip(prompts, completions, strict=True):
        try:
            value = float(fn(prompt, text))
        except (TypeError, ValueError) as e:
            raise ValueError(f"--reward {path}: not a number for {prompt[:60]!r} ({e})") from None
        if not math.isfinite(value):
            raise ValueError(
                f"--reward {path}: returned {value} for {prompt[:60]!r}; rewards must be finite"
            )
        out.append(value)
    return np.asarray(out, np.float32)
