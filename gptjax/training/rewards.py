"""Reward functions for RL, named by `module:function` paths and called as TRL calls them, so a
reward written for TRL's GRPOTrainer runs unchanged:

    fn(prompts=[...], completions=[...], completion_ids=[...], **columns) -> list[float | None]

once per batch, one entry per completion. `prompts` and `completions` are strings for standard
data and message lists for conversational data (a completion is then
[{"role": "assistant", "content": ...}]); `columns` are the records' other fields, one list per
field (`answer=[...]`). None means "not applicable": it adds nothing to that completion's
reward and is left out of that reward's mean.

A function of two positional parameters and no `completions` (gptjax's earlier form,
`fn(prompt, completion) -> float`, the prompt being the last user turn's text) is called once
per completion through an adapter.

Several rewards add up with weights (`--reward-weights`, default 1 each), as TRL sums them; each
reward's mean over the batch is logged under `rewards/<its function's name>`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gptjax.data.prompts import question_of, text_of


@dataclass(frozen=True)
class Reward:
    path: str  # as given: module:function
    name: str  # the function's name (its metrics' key)
    fn: Callable
    per_completion: bool  # gptjax's earlier fn(prompt, completion) -> float


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
    return Reward(path, getattr(fn, "__name__", name), fn, per_completion(fn))


def per_completion(fn: Callable) -> bool:
    """Whether `fn` has the earlier form: two positional parameters, neither `completions`
    nor any **kwargs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it TRL's way
        return False
    kinds = [p.kind for p in params]
    names = {p.name for p in params}
    positional = [k for k in kinds if k in (k.POSITIONAL_ONLY, k.POSITIONAL_OR_KEYWORD)]
    return (
        "completions" not in names
        and inspect.Parameter.VAR_KEYWORD not in kinds
        and (len(positional) == 2)
    )


def load_rewards(paths, weights=()) -> tuple[list[Reward], np.ndarray]:
    """The rewards and their weights (1 each when none are given); names made unique."""
    if not paths:
        raise ValueError("--reward: at least one module:function is needed")
    rewards = [load_reward(p) for p in paths]
    if weights and len(weights) != len(rewards):
        raise ValueError(
            f"--reward-weights: {len(weights)} weights for {len(rewards)} rewards; give one each"
        )
    seen: dict[str, int] = {}
    for i, r in enumerate(rewards):
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            rewards[i] = Reward(r.path, f"{r.name}_{seen[r.name]}", r.fn, r.per_completion)
    return rewards, np.asarray(weights or [1.0] * len(rewards), np.float64)


def score(
    rewards: list[Reward], weights, prompts, completions, columns: dict, **more
) -> tuple[np.ndarray, dict[str, float]]:
    """-> (each completion's weighted sum of rewards, None counting 0: float32 [n], and each
    reward's mean over the completions it applied to, by name). `more` (`completion_ids`) is
    passed on as TRL passes it."""
    table = np.stack([values(r, prompts, completions, columns, more) for r in rewards], axis=1)
    total = np.nansum(table * np.asarray(weights)[None, :], axis=1).astype(np.float32)
    means = {}
    for r, column in zip(rewards, table.T, strict=True):
        if not np.isnan(column).all():
            means[f"rewards/{r.name}"] = float(np.nanmean(column))
    return total, means


def values(r: Reward, prompts, completions, columns: dict, more: dict) -> np.ndarray:
    """float64 [n]: reward `r` of each completion, NaN where it returned None; a value that is
    neither a finite number nor None, or a list of the wrong length, stops the run with one
    line naming the reward."""
    n = len(completions)
    if r.per_completion:
        got = [r.fn(question_of(p), text_of(c)) for p, c in zip(prompts, completions, strict=True)]
    else:
        got = r.fn(prompts=prompts, completions=completions, **more, **columns)
    if not isinstance(got, list | tuple | np.ndarray) or len(got) != n:
        size = len(got) if hasattr(got, "__len__") else type(got).__name__
        raise ValueError(f"--reward {r.path}: returned {size} values for {n} completions")
    out = np.empty(n, np.float64)
    for i, value in enumerate(got):
        if value is None:
            out[i] = np.nan
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"--reward {r.path}: {value!r} is not a number (completion {i}, "
                f"{question_of(prompts[i])[:60]!r})"
            ) from None
        if not math.isfinite(out[i]):
            raise ValueError(
                f"--reward {r.path}: returned {value} for {question_of(prompts[i])[:60]!r}; "
                "rewards must be finite (or None: not applicable)"
            )
    return out
