"""train.classify: what trains and what stays frozen, exact resume, LoRA export, predict, errors."""

import json

import jax
import numpy as np
import pytest

from gptjax.store.names import flatten
from gptjax.training.runlog import read_metrics
from gptjax.training.steps import OptimConfig, init_state, make_optimizer, make_train_step, split
from tests.cli import run
from train.classify import Classify, Options

FAST = [
    "--preset",
    "nano",
    "--max-length",
    "24",
    "--batch-size",
    "4",
    "--eval-batches",
    "1",
    "--lr",
    "1e-3",
    "--no-progress",
]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "reviews.tsv"
    rng = np.random.default_rng(0)
    words = {"pos": ["great", "fine", "lovely"], "neg": ["awful", "bad", "dull"]}
    lines = []
    for i in range(60):
        label = ["pos", "neg"][i % 2]
        lines.append(f"{label}\t{' '.join(rng.choice(words[label], 5))} movie {i}\n")
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("mode", ["head", "last-block", "lora", "all"])
def test_frozen_parameters_stay_bit_identical(labelled, tmp_path, mode):
    opts = Options(
        preset="nano",
        data=str(labelled),
        trainable=mode,
        max_length=16,
        lora_rank=2,
        out=str(tmp_path),
        batch_size=4,
    )
    task = Classify(opts)
    optimizer = make_optimizer(OptimConfig(lr=1e-2, grad_clip=None))
    state = init_state(task.init_params(), optimizer, jax.random.key(0), task.trainable)
    step = jax.jit(
        make_train_step(task.loss_fn, optimizer, OptimConfig(lr=1e-2), trainable=task.trainable)
    )
    before = dict(flatten(jax.tree.map(np.asarray, state.params)))
    for s in range(2):
        state, _ = step(state, task.train.batch(np.arange(4 * s, 4 * s + 4)))
    after = dict(flatten(state.params))
    trained, frozen = split(state.params, task.trainable)
    moved = {p for p in before if not np.array_equal(before[p], after[p])}
    assert moved == {p for p, _ in flatten(trained)}  # everything that trains has moved
    for path, _ in flatten(frozen):
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    # The optimizer state covers the trained leaves only (Adam: two moments each, + counters).
    n_trained = sum(x.size for x in jax.tree.leaves(trained))
    assert (
        2 * n_trained < sum(x.size for x in jax.tree.leaves(state.opt_state)) <= 2 * n_trained + 4
    )
    tops = {p.split("/")[0] for p in before}
    expected = {
        "head": {"score"},
        "last-block": {"h_1", "ln_f", "score"},
        "lora": {"lora", "model"},
        "all": tops,
    }[mode]
    assert set(trained) == expected
    if mode == "lora":
        assert set(trained["model"]) == {"score"}


def classify(out, *args):
    return run("train.classify", "--out", out, *FAST, *args)


def records(out):
    return read_metrics(out, timing=False)


def test_resume_continues_exactly(labelled, tmp_path):
    args = [
        "--data",
        str(labelled),
        "--trainable",
        "last-block",
        "--ckpt-every",
        "3",
        "--eval-every",
        "3",
    ]
    whole = classify(tmp_path / "whole", *args, "--max-steps", "6")
    assert whole.returncode == 0, whole.stderr
    assert "trainable parameters: 12,832 of 1,635,808 (last-block)" in whole.stdout
    first = classify(tmp_path / "split", *args, "--max-steps", "3")
    assert first.returncode == 0, first.stderr
    other = classify(
        tmp_path / "split", *args, "--max-steps", "6", "--resume", "--trainable", "all"
    )
    assert other.returncode == 2 and "different classifier" in other.stderr
    resumed = classify(tmp_path / "split", *args, "--max-steps", "6", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert records(tmp_path / "split") == records(tmp_path / "whole")  # float for float
    assert {"val_acc", "eval_train_acc", "val_loss"} <= set(records(tmp_path / "whole")[-1])
    for name in ("loss.png", "accuracy.png"):
        assert (tmp_path / "whole" / name).stat().st_size > 1000


def test_lora_run_exports_peft_and_predicts(labelled, tmp_path):
    out = tmp_path / "lora"
    res = classify(
        out,
        "--data",
        str(labelled),
        "--trainable",
        "lora",
        "--lora-rank",
        "4",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
    )
    assert res.returncode == 0, res.stderr
    # rank 4 on c_attn [32, 96], c_proj [32, 32], c_fc [32, 128] and c_proj [128, 32] of 2
    # blocks (2,048 each), + the head [32, 2]
    assert "trainable parameters: 4,160 of" in res.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"train_accuracy", "validation_accuracy", "test_accuracy"}
    config = json.loads((out / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["modules_to_save"] == ["score"]
    head = json.loads((out / "model" / "classifier.json").read_text())
    assert head["labels"] == ["neg", "pos"]
    pred = run("train.classify", "predict", "--ckpt", out, "lovely movie")
    assert pred.returncode == 0, pred.stderr
    label, prob, text = pred.stdout.strip().split("\t")
    assert label in ("neg", "pos") and 0.5 <= float(prob) <= 1 and text == "lovely movie"
    again = classify(
        out,
        "--data",
        str(labelled),
        "--trainable",
        "lora",
        "--lora-rank",
        "4",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--resume",
    )
    assert again.returncode == 0 and "already finished (step 4 of 4)" in again.stderr


def test_user_errors_are_one_line(tmp_path):
    one = tmp_path / "one.tsv"
    one.write_text("ham\thello\nham\tbye\n")
    res = classify(tmp_path / "r", "--data", one)
    assert res.returncode == 2 and "only one class" in res.error and res.stderr == res.error + "\n"
    missing = run("train.classify", "predict", "--ckpt", tmp_path, "hi")
    assert missing.returncode == 2 and "not a gptjax model" in missing.error
