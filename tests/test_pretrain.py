"""The pretrain script end to end: checkpoints, refusals, samples, user errors (resuming after
signals and kills: test_preempt)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.cli import run
from tests.runs import REFERENCE, losses, pretrain


def test_resume_refusals_and_leftovers(reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    again = pretrain(out, *REFERENCE, "--resume", "never")
    assert again.returncode == 2 and "which --resume never refuses" in again.stderr

    other = pretrain(out, *REFERENCE, "--resume", "--context-length", "64")
    assert other.returncode == 2 and "different model config" in other.stderr

    # A save killed midway leaves a temporary directory; the previous step stays restorable.
    (out / "checkpoints" / "25.orbax-checkpoint-tmp-1234").mkdir()
    cont = pretrain(out, *REFERENCE, "--max-steps", "25", "--keep", "1", "--resume")
    assert cont.returncode == 0, cont.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["25"]
    assert [s for s, _, _ in losses(out)] == list(range(1, 26))

    empty = pretrain(tmp_path / "empty", "--resume")
    assert empty.returncode == 2 and "no checkpoint" in empty.stderr


def test_compute_options_train_and_generate_samples_from_the_run(tmp_path):
    out = tmp_path / "run"
    fast = ["--remat", "dots", "--attention", "xla", "--ce-chunks", "2", "--dtype", "auto"]
    res = pretrain(out, "--max-steps", "2", *fast)
    assert res.returncode == 0, res.stderr
    gen = run("train.generate", "--ckpt", out, "--max-new-tokens", "5")
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
        (lambda d: (d / "folder").mkdir() or d / "folder", "folder: no .txt, .jsonl"),
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
    out = pretrain(tmp_path / "run", "--data", setup(tmp_path))
    assert out.returncode == 2 and needle in out.error


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    res = pretrain(
        out,
        *("--max-steps", "40", "--lr", "1e6", "--grad-clip", "0"),
        *("--ckpt-every", "1", "--eval-every", "100"),
    )
    assert res.returncode == 2, res.stderr
    assert "non-finite loss" in res.stderr
    step = int(res.stderr.split("at step ")[1].split(";")[0])
    kept = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert kept and max(kept) == step - 1


def test_folder_of_text_files_is_tokenized_once(tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    verdict = (Path(os.environ["GPTJAX_CACHE"]) / "the-verdict.txt").read_text()
    for i in range(3):
        (data / f"part{i}.txt").write_text(verdict[i * 6000 : (i + 1) * 6000])
    trace = tmp_path / "trace"
    first = pretrain(tmp_path / "a", "--data", data, "--max-steps", "1", "--progress")
    assert first.returncode == 0, first.stderr
    assert "tokenizing" in first.stderr and "devices: " in first.stderr + first.stdout
    second = pretrain(tmp_path / "b", "--data", data, "--max-steps", "4", "--profile", trace)
    assert second.returncode == 0 and "tokenizing" not in second.stderr
    assert list((Path(os.environ["GPTJAX_CACHE"]) / "tokens").glob("*.bin"))
    assert list(trace.rglob("*.xplane.pb"))  # --profile wrote a trace of steps 3-4


def test_init_from_a_run_continues_from_its_weights(reference_run, tmp_path):
    second = tmp_path / "second"
    res = pretrain(second, "--init-from", reference_run, "--max-steps", "1", "--eval-every", "1")
    assert res.returncode == 0, res.stderr
    (_, start_loss, _), *_ = losses(second)
    (_, fresh_loss, _), *_ = losses(reference_run)
    assert start_loss < fresh_loss - 0.2  # it starts where the first run left off
    record = json.loads((second / "metrics.jsonl").read_text().splitlines()[0])
    assert record["val_perplexity"] > 1.0
    shaped = pretrain(tmp_path / "third", "--init-from", reference_run, "--position", "rotary")
    assert shaped.returncode == 2 and shaped.stderr.strip() == (
        "error: --position, --rope-base shape(s) a --preset model; --init-from brings its own "
        "weights"
    )
