"""RL from verifiable rewards: GRPO's advantages and clipped loss by hand, rewards in TRL's form
(columns, weights, None, the earlier form), GSM8K's answers, the records RL reads, and
`train.rl` runs: the ratio at one update a rollout, the clip acting at several, a resume
between two updates of a rollout equal to the run not stopped, and one-line errors."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest

from gptjax.data import arithmetic, gsm8k, prompts
from gptjax.tasks.rl import Options, sft_stage
from gptjax.training import grpo, rewards
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


def test_clipped_loss_and_its_figures_by_hand():
    # Rows: (advantage, [log p - log p_old] per token); the mask drops each row's last token.
    A = np.array([1.5, -1.0, 0.8, 0.0], np.float32)
    d = np.array([[0.5, -0.5, 9.0], [0.5, -0.5, 9.0], [0.0, 0.1, 9.0], [0.3, 0.3, 9.0]], np.float32)
    old = np.zeros_like(d) - 2.0
    mask = np.array([[1, 1, 0]] * 4, bool)
    ref = old + 0.25
    s, n, sums = grpo.clipped_loss(
        old + d, old, A, mask, epsilon=0.2, epsilon_high=0.28, kl_beta=0.1, ref_logp=ref
    )
    total, kls, clipped, ratios = 0.0, 0.0, 0, 0.0
    for a, row in zip(A, d, strict=True):
        for x in row[:2]:
            r = math.exp(x)
            pg = -min(r * a, min(max(r, 0.8), 1.28) * a)
            k = math.exp(0.25 - x) - (0.25 - x) - 1
            total, kls, ratios = total + pg + 0.1 * k, kls + k, ratios + r
            clipped += (r > 1.28 and a > 0) or (r < 0.8 and a < 0)
    assert float(n) == 8 and float(sums["clip_fraction"]) == clipped == 2
    np.testing.assert_allclose(float(s), total, rtol=1e-5)
    np.testing.assert_allclose(float(sums["kl"]), kls, rtol=1e-5)
    np.testing.assert_allclose(float(sums["ratio"]), ratios, rtol=1e-5)
    # one update a rollout: no old log-probs, the ratio is exactly 1 and nothing is clipped
    s1, _, one = grpo.clipped_loss(old + d, None, A, mask)
    assert float(one["ratio"]) == 8.0 and float(one["clip_fraction"]) == 0.0
    np.testing.assert_allclose(float(s1), -float(np.sum(A[:, None] * mask)), rtol=1e-6)


def seen_columns(prompts, completions, completion_ids, answer, source, **kwargs):
    """A TRL-form reward that checks what it is given: the records' columns, one list each."""
    n = len(completions)
    assert len(prompts) == len(answer) == len(source) == len(completion_ids) == n
    assert all(a.split("####")[-1].strip().isdigit() for a in answer)
    assert set(source) == {"test"} and isinstance(completions[0], str)
    return [None if i % 2 else 1.0 for i in range(n)]  # None: not applicable


def by_length(prompt: str, completion: str) -> float:
    """gptjax's earlier form: one (prompt, completion) at a time."""
    assert prompt.startswith("What is")
    return len(completion) / 10


def test_trl_form_rewards_add_up_by_weight_and_none_is_left_out():
    loaded, weights = rewards.load_rewards(
        ["tests.test_rl:seen_columns", "tests.test_rl:by_length", "gptjax.data.gsm8k:correct"],
        [2.0, 1.0, 0.5],
    )
    assert [r.per_completion for r in loaded] == [False, True, False]
    rows = [{**r, "source": "test"} for r in arithmetic.records(4, seed=1)]
    records = [prompts.record(r, "x") for r in rows]
    truth = [gsm8k.gold(r.columns["answer"]) for r in records]
    completions = [f"#### {truth[0]}", "no", f"so {truth[2]}", "x####"]
    total, means = rewards.score(
        loaded,
        weights,
        [r.prompt for r in records],
        completions,
        prompts.columns(records),
        completion_ids=[[1]] * 4,
    )
    lengths = np.array([len(c) / 10 for c in completions])
    right = np.array([1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(total, 2 * np.array([1, 0, 1, 0]) + lengths + 0.5 * right)
    assert means == pytest.approx(
        {"rewards/seen_columns": 1.0, "rewards/by_length": lengths.mean(), "rewards/correct": 0.5}
    )


def test_gsm8k_answers_with_commas_negatives_and_dollars():
    assert gsm8k.gold("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == 72
    assert gsm8k.gold("...\n#### 1,234") == 1234 and gsm8k.gold("#### -$5") == -5
    assert gsm8k.gold("no marker") is None
    assert gsm8k.extract("The answer is $1,000.") == 1000
    assert gsm8k.extract("3 + 4 = 7\n#### 7") == 7 and gsm8k.extract("-12") == -12
    assert gsm8k.extract("#### 2.50 then 9") == Decimal("2.5") and gsm8k.extract("none") is None
    messages = [{"role": "assistant", "content": "#### 72"}]  # TRL's conversational form
    assert gsm8k.correct([messages, "71", "1"], ["#### 72", "#### 72", "x"]) == [1.0, 0.0, None]
    assert gsm8k.formatted(["a\n#### 1,000", "#### 5 and more", "5"]) == [1.0, 0.0, 0.0]
    assert gsm8k.correct(["1"], [None]) == [None]  # a record without a text answer


def test_records_in_each_form_and_their_one_line_errors(tmp_path):
    rows = [
        {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2", "level": 1},
        {"prompt": "Say hi", "completion": "hi"},
        {"prompt": [{"role": "user", "content": "Hey"}]},
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}]},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = prompts.load(str(path))
    assert [r.answer for r in got] == ["1 + 1 = 2\n#### 2", "hi", None, "A"]
    assert got[0].columns == {"answer": "1 + 1 = 2\n#### 2", "level": 1}
    assert got[0].prompt == rows[0]["question"]
    assert got[2].prompt == rows[2]["prompt"] and got[3].messages == rows[3]["messages"][:1]
    assert prompts.columns(got)["level"] == [1, None, None, None]
    first = prompts.load("arithmetic:n=3,max_operand=9,ops=+")[0]
    assert first.answer.endswith(f"\n#### {arithmetic.solution(first.prompt)}")
    (tmp_path / "bad.jsonl").write_text('{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: record 0: expected \{\"prompt\""):
        prompts.load(str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="arithmetic: 'size=3': expected KEY=VALUE"):
        prompts.load("arithmetic:size=3")


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A nano ChatML model finetuned for 4 steps on worked arithmetic (the SFT stage)."""
    out = tmp_path_factory.mktemp("rl-sft")
    opts = Options(
        out=str(out),
        preset="nano",
        data="arithmetic:n=72,max_operand=9",
        val_prompts=8,
        sft_steps=4,
        sft_batch_size=8,
        sft_tokenizer=280,
        progress=False,
    )
    return sft_stage(opts)


def gsm8k_file(folder):
    rows = [{**r, "source": "test"} for r in arithmetic.records(24, seed=5, max_operand=9)]
    path = folder / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rl_args(model, data, *more):
    return [
        *("--init-from", model, "--data", data, "--val-prompts", "8", "--group", "4"),
        *("--batch-size", "2", "--max-new-tokens", "6", "--eval-every", "3", "--no-progress"),
        *more,
    ]


def test_a_resume_between_two_updates_of_a_rollout_is_bitwise_and_the_clip_acts(
    tmp_path, chat_model
):
    data = gsm8k_file(tmp_path)
    args = rl_args(chat_model, data, "--num-iterations", "4", "--lr", "3e-2", "--kl-beta", "0.05")
    args += ["--reward", "gptjax.data.gsm8k:correct", "--reward", "tests.test_rl:seen_columns"]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    res = run("train.rl", "--out", whole, *args, "--max-steps", "6")
    assert res.returncode == 0, res.stderr
    assert "4 iterations x 1 minibatches a rollout" in res.stdout
    # stopped after update 3 of the first rollout (its checkpoint 3), continued to 6
    assert run("train.rl", "--out", halves, *args, "--max-steps", "3").returncode == 0
    again = run("train.rl", "--out", halves, *args, "--max-steps", "6")
    assert again.returncode == 0 and "continuing from checkpoint 3" in again.stderr
    records = read_metrics(whole, timing=False)
    assert records == read_metrics(halves, timing=False)
    assert sorted(p.name for p in (whole / "rollouts").iterdir()) == ["0.npz", "4.npz"]
    assert records[0]["ratio"] == 1.0 and records[0]["clip_fraction"] == 0.0  # the sampler's
    assert max(r["clip_fraction"] for r in records) > 0  # later updates of a rollout clip
    keys = {"reward", "reward_std", "kl", "ratio", "rewards/correct", "rewards/seen_columns"}
    assert all(keys <= set(r) for r in records)
    assert [r["step"] for r in records if "val_reward" in r] == [3, 6]
    assert (whole / "reward.png").is_file() and (whole / "model" / "task.json").is_file()
    task = json.loads((whole / "model" / "task.json").read_text())
    assert task["template"] == "chatml"  # RL keeps what SFT made of the model


def test_one_update_a_rollout_has_ratio_one_and_clips_nothing(tmp_path, chat_model):
    args = rl_args(chat_model, "arithmetic:n=40,max_operand=9", "--lr", "3e-2", "--max-steps", "3")
    res = run("train.rl", "--out", tmp_path / "r", *args, "--reward", "tests.test_rl:by_length")
    assert res.returncode == 0 and "one update a rollout (the ratio is 1" in res.stdout
    records = read_metrics(tmp_path / "r", timing=False)
    assert [(r["ratio"], r["clip_fraction"]) for r in records] == [(1.0, 0.0)] * 3
    assert not (tmp_path / "r" / "rollouts").exists()  # never read back: not written


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--reward", "nowhere"], "expected module:function"),
        (["--reward", "no_such_module_xyz:f"], "cannot import no_such_module_xyz"),
        (["--reward", "gptjax.data.gsm8k:nope"], "gptjax.data.gsm8k has no nope"),
        (["--reward", "math:nan"], "math.nan is not callable"),
        (["--reward-weights", "1", "2"], "--reward-weights: 2 weights for 1 rewards"),
        (["--data", "arithmetic:ops=-"], "unknown operation '-'"),
        (["--reward", "tests.test_rl:infinite"], "returned inf"),
        (["--reward", "tests.test_rl:too_few"], "returned 1 values for 8 completions"),
    ],
)
def test_bad_rewards_and_data_are_one_line(tmp_path, chat_model, flags, says):
    args = rl_args(chat_model, "arithmetic:n=40,max_operand=9", "--max-steps", "1", *flags)
    res = run("train.rl", "--out", tmp_path / "r", *args)
    assert res.returncode == 2 and says in res.error


def infinite(prompt: str, completion: str) -> float:
    return math.inf


def too_few(completions, **kwargs) -> list[float]:
    return [1.0]


def test_sft_needs_worked_answers(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hi"}\n' * 10)
    args = ["--data", path, "--sft-steps", "2", "--val-prompts", "2", "--out", tmp_path / "r"]
    res = run("train.rl", *args)
    assert res.returncode == 2 and "record 0 has no worked answer" in res.error
