"""The pretrain script end to end: checkpoints, refusals, samples, user errors (resuming after
signals and kills: test_preempt)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FAST = [
    "--preset",
    "tiny",
    "--context-length",
    "32",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--eval-batches",
    "1",
    "--sample-tokens",
    "4",
    "--no-progress",
]


def cmd(out, *args):
    return [sys.executable, "-m", "train.pretrain", "--out", str(out), *FAST, *args]


def run(out, *args, env=None, timeout=300):
    return subprocess.run(
        cmd(out, *args), capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env
    )


def losses(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["train_loss"], r.get("val_loss")) for r in map(json.loads, lines)]


def test_resume_refusals_and_leftovers(tmp_path):
    out = tmp_path / "run"
    assert run(out, "--max-steps", "2", "--ckpt-every", "1", "--keep", "1").returncode == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2"]

    again = run(out, "--max-steps", "2", "--resume", "never")
    assert again.returncode == 2 and "which --resume never refuses" in again.stderr

    other = run(out, "--max-steps", "4", "--resume", "--context-length", "64")
    assert other.returncode == 2 and "different model config" in other.stderr
    assert "Traceback" not in other.stderr

    # A save killed midway leaves a temporary directory; the previous step stays restorable.
    (out / "checkpoints" / "3.orbax-checkpoint-tmp-1234").mkdir()
    cont = run(out, "--max-steps", "3", "--resume")
    assert cont.returncode == 0, cont.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["2", "3"]
    assert [s for s, _, _ in losses(out)] == [1, 2, 3]

    empty = run(tmp_path / "empty", "--resume")
    assert empty.returncode == 2 and "no checkpoint" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_generate_samples_from_a_run(tmp_path):
    out = tmp_path / "run"
    fast = ["--remat", "dots", "--attention", "xla", "--ce-chunks", "2", "--dtype", "auto"]
    assert run(out, "--max-steps", "2", *fast).returncode == 0
    args = ["-m", "train.generate", "--ckpt", str(out), "--max-new-tokens", "5"]
    gen = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("Every effort moves you")


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: d / "missing.txt", "no such file or folder"),
        (lambda d: ((d / "empty.txt").write_text("") and None) or d / "empty.txt", "empty"),
        (
            lambda d: ((d / "short.txt").write_text("a few words") and None) or d / "short.txt",
            "too short",
        ),
        (
            lambda d: ((d / "bin.txt").write_bytes(b"\xff\xfe\x00bad") and None) or d / "bin.txt",
            "unreadable as UTF-8",
        ),
        (lambda d: (d / "folder").mkdir() or d / "folder", "no .txt files"),
        (
            lambda d: (
                [
                    (d / f"x_{s}.bin").write_bytes(b"\0" * 1100)
                    for s in ("train_000001", "val_000000")
                ]
                and d
            ),
            "x_train_000001.bin: not an llm.c token shard (magic 0",
        ),
    ],
    ids=["missing", "empty", "too-short", "not-text", "empty-folder", "bad-shard"],
)
def test_bad_data_is_one_line(tmp_path, setup, needle):
    out = run(tmp_path / "run", "--data", str(setup(tmp_path)))
    assert out.returncode == 2
    assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    res = run(
        out,
        "--max-steps",
        "40",
        "--lr",
        "1e6",
        "--grad-clip",
        "0",
        "--ckpt-every",
        "1",
        "--eval-every",
        "100",
    )
    assert res.returncode == 2, res.stderr
    assert "non-finite loss" in res.stderr and "Traceback" not in res.stderr
    step = int(res.stderr.split("at step ")[1].split(";")[0])
    kept = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert kept and max(kept) == step - 1


def test_folder_of_text_files_is_tokenized_once(tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    verdict = (Path(os.environ["GPTJAX_CACHE"]) / "the-verdict.txt").read_text()
    for i in range(3):
        (data / f"part{i}.txt").write_text(verdict[i * 6000 : (i + 1) * 6000])
    first = run(
        tmp_path / "a",
        "--data",
        str(data),
        "--max-steps",
        "1",
        "--progress",
        "--profile",
        str(tmp_path / "trace"),
    )
    assert first.returncode == 0, first.stderr
    assert "tokenizing" in first.stderr and "devices: " in first.stderr + first.stdout
    assert list((tmp_path / "trace").rglob("*.xplane.pb"))  # --profile wrote a trace
    second = run(tmp_path / "b", "--data", str(data), "--max-steps", "1")
    assert second.returncode == 0 and "tokenizing" not in second.stderr
    assert list((Path(os.environ["GPTJAX_CACHE"]) / "tokens").glob("*.bin"))


def test_init_from_a_run_continues_from_its_weights(tmp_path):
    first = tmp_path / "first"
    assert run(first, "--max-steps", "6", "--eval-every", "6").returncode == 0
    second = tmp_path / "second"
    res = run(second, "--init-from", str(first), "--max-steps", "1", "--eval-every", "1")
    assert res.returncode == 0, res.stderr
    (_, start_loss, _), *_ = losses(second)
    (_, fresh_loss, _), *_ = losses(first)
    assert start_loss < fresh_loss - 0.2  # it starts where the first run left off
    record = json.loads((second / "metrics.jsonl").read_text().splitlines()[0])
    assert record["val_perplexity"] > 1.0
