"""RL from verifiable rewards: GRPO's advantages and clipped loss by hand, the arithmetic task's
reward, the `train.rl` run (resume exact, reward and reward_std logged) and its one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gptjax.data import arithmetic
from gptjax.training import grpo
from gptjax.training.runlog import read_metrics
from tests.cli import run

# Two groups of three completions.
REWARDS = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5]])


def test_group_advantages_by_hand():
    adv = grpo.group_advantages(REWARDS)
    mean, std = 1 / 3, math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 3)
    expected = [(1 - mean) / (std + 1e-4), -mean / (std + 1e-4), -mean / (std + 1e-4)]
    np.testing.assert_allclose(adv[0], expected, rtol=1e-6)
    np.testing.assert_array_equal(adv[1], 0.0)  # all equal: nothing to learn from this group


def test_clipped_loss_by_hand():
    # Rows: (advantage, [log p - log p_old] per token); the mask drops each row's last token.
    A = np.array([1.5, -1.0, 0.8, 0.0], np.float32)
    d = np.array([[0.5, -0.5, 9.0], [0.5, -0.5, 9.0], [0.0, 0.1, 9.0], [0.3, 0.3, 9.0]], np.float32)
    old = np.zeros_like(d) - 2.0
    mask = np.array([[1, 1, 0]] * 4, bool)
    ref = old + 0.25
    s, n, kl = grpo.clipped_loss(old + d, old, A, mask, clip=0.2, kl_beta=0.1, ref_logp=ref)
    total, kls = 0.0, 0.0
    for a, row in zip(A, d, strict=True):
        for x in row[:2]:
            r = math.exp(x)
            pg = -min(r * a, min(max(r, 0.8), 1.2) * a)
            k = math.exp(0.25 - x) - (0.25 - x) - 1
            total, kls = total + pg + 0.1 * k, kls + k
    assert float(n) == 8
    np.testing.assert_allclose(float(s), total, rtol=1e-5)
    np.testing.assert_allclose(float(kl), kls, rtol=1e-5)


def test_arithmetic_reward_reads_the_last_number():
    qs = arithmetic.problems(50, seed=3, max_operand=99)
    assert qs == arithmetic.problems(50, seed=3, max_operand=99) and len(set(qs)) > 40
    q = "What is 47 + 38?"
    assert arithmetic.reward(q, "47 + 38 = 85") == 1.0
    assert arithmetic.reward(q, "85 is it, not 84") == 0.0
    assert arithmetic.reward("What is 7 * 6?", arithmetic.worked("What is 7 * 6?")) == 1.0
    assert arithmetic.reward(q, "no idea") == 0.0
    with pytest.raises(ValueError, match="no 'What is"):
        arithmetic.reward("Tell me a joke", "42")


RL = [
    *("--preset", "nano", "--sft-steps", "4", "--sft-batch-size", "8", "--problems", "64"),
    *("--sft-tokenizer", "280"),
    *("--val-prompts", "8", "--batch-size", "2", "--group", "4", "--max-new-tokens", "6"),
    *("--lr", "1e-3", "--eval-every", "2", "--kl-beta", "0.05", "--no-progress"),
]


def test_rl_resumes_exactly_and_logs_the_reward(tmp_path):
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    assert run("train.rl", "--out", whole, *RL, "--max-steps", "4").returncode == 0
    # A constant learning rate: a run of 2 steps continued to 4 is a run of 4.
    first = run("train.rl", "--out", halves, *RL, "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    again = run("train.rl", "--out", halves, *RL, "--max-steps", "4")
    assert again.returncode == 0 and "continuing from checkpoint 2" in again.stderr
    records = read_metrics(whole, timing=False)
    assert records == read_metrics(halves, timing=False)
    assert all({"reward", "reward_std", "kl"} <= set(r) for r in records)
    assert [r["step"] for r in records if "val_reward" in r] == [2, 4]
    assert (whole / "reward.png").is_file() and (whole / "model" / "task.json").is_file()
    task = json.loads((whole / "model" / "task.json").read_text())
    assert task["template"] == "chatml"  # RL keeps what SFT made of the model


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--reward", "nowhere"], "expected module:function"),
        (["--reward", "no_such_module_xyz:f"], "cannot import no_such_module_xyz"),
        (["--reward", "gptjax.data.arithmetic:nope"], "gptjax.data.arithmetic has no nope"),
        (["--reward", "math:nan"], "math.nan is not callable"),
        (["--reward", "tests.test_rl:infinite"], "returned inf"),
    ],
)
def test_bad_rewards_are_one_line(tmp_path, flags, says):
    res = run("train.rl", "--out", tmp_path / "r", *RL, "--max-steps", "1", *flags)
    assert res.returncode == 2 and says in res.error


def infinite(prompt: str, completion: str) -> float:
    return math.inf
