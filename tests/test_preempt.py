"""Runs that survive preemption, refuse to share a directory and never load a damaged checkpoint.

The runs that are signalled, killed or hold a lock against another run are processes of their
own; everything else (resuming, failures injected by monkeypatching) runs in this process."""

import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import orbax.checkpoint as ocp
import pytest

from gptjax import GPTConfig, init_params
from gptjax.store import Model
from tests.cli import run
from tests.conftest import ROOT
from tests.runs import MODERN, REFERENCE, losses, pretrain, pretrain_cmd


def start(out, *args):
    return subprocess.Popen(
        pretrain_cmd(out, *args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_step(proc, out, step, timeout=240):
    deadline = time.time() + timeout
    metrics = out / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= step):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)


def flip_a_byte(folder):
    """Flip one bit in the middle of the largest file under `folder` (a params data file)."""
    path = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_the_reference_run_warms_up_from_step_1_and_plots(reference_run):
    assert (reference_run / "loss.png").stat().st_size > 1000
    records = [json.loads(x) for x in (reference_run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records]
    assert lrs[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # warmup trains at step 1
    assert sorted(int(p.name) for p in (reference_run / "checkpoints").iterdir()) == [8, 16, 24]


def test_a_second_signal_stops_at_once_and_the_run_resumes_exactly(reference_run, tmp_path):
    # Ctrl-C twice: SIGINT takes SIGTERM's path; the second stops at once, and the last complete
    # checkpoint restores.
    out = tmp_path / "run"
    proc = start(out, *REFERENCE, "--max-steps", "2000")  # a long run, stopped early
    wait_for_step(proc, out, 10)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert not (out / ".lock").exists()
    # A command-line run names its kernel policy first, then whether it keeps its heap (it does
    # where glibc's settings apply: gptjax.heap.keep); the resumed run below, in this process
    # on glibc's defaults, takes the same steps.
    # (tqdm's tokenizing bar, when this run tokenizes, starts with a carriage return: an empty line)
    log = [line for line in err.splitlines() if line and not line.startswith("tokenizing")]
    assert (
        log[0] == "kernels: dense=xla head=cpu attention=reference ce_budget=1GiB fence=cpu (cpu)"
    )
    assert log[1].startswith("heap: kept" if platform.libc_ver()[0] == "glibc" else "heap: ")
    resumed = pretrain(out, *REFERENCE, "--resume")  # the boolean flag of old: --resume always
    assert resumed.returncode == 0, resumed.stderr
    assert "--resume always: continuing from checkpoint" in resumed.stderr
    assert losses(out) == losses(reference_run)  # same floats, step for step


def test_one_run_per_directory_sigterm_checkpoints_and_resume_is_exact(reference_run, tmp_path):
    out = tmp_path / "run"
    first = start(out, *REFERENCE, "--max-steps", "2000")  # a long run, stopped early
    wait_for_step(first, out, 10)
    holder = json.loads((out / ".lock").read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    second = pretrain(out, *REFERENCE, "--max-steps", "2000", "--resume")
    assert second.returncode == 2 and f"in use by pid {first.pid}" in second.error
    assert first.poll() is None, "the first run was still going when refused the second"

    # SIGTERM, as a cloud preempts: the step in flight finishes and is checkpointed.
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=240)
    assert first.returncode == 143 and "Traceback" not in err, err
    stopped = int(err.split("after step ")[1].split(" ")[0])
    assert stopped >= 10 and "SIGTERM" in err and "run the same command" in err
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert steps[-1] == stopped  # nothing after the last finished step is lost
    assert [s for s, _, _ in losses(out)] == list(range(1, stopped + 1))  # no doubles
    assert not (out / ".lock").exists()
    if stopped < 24:
        resumed = pretrain(out, *REFERENCE)  # the same run, now to 24 steps
        assert resumed.returncode == 0, resumed.stderr
        assert f"--resume auto: continuing from checkpoint {stopped}" in resumed.stderr
        assert losses(out) == losses(reference_run)  # same floats, step for step

    # A lock left by a process that died (here: one that has exited) is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    res = pretrain(stale, "--max-steps", "2")
    assert res.returncode == 0, res.stderr
    assert f"pid {dead.pid} on this host is no longer running" in res.stderr
    assert not (stale / ".lock").exists()

    again = pretrain(stale, "--max-steps", "2", "--resume")
    assert again.returncode == 0 and "already finished (step 2 of 2)" in again.stderr


def truncate_a_file(folder):
    """Cut the largest file under `folder` (an optimizer-state data file) to half its size."""
    path = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("damage", "part", "words"),
    [
        (flip_a_byte, "params", "does not match its checksum"),
        (truncate_a_file, "train", "unreadable (ValueError: OUT_OF_RANGE"),
    ],
)
def test_damaged_newest_checkpoint_falls_back_and_ends_equal(
    reference_run, tmp_path, damage, part, words
):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)  # checkpoints 8, 16 and 24
    damage(out / "checkpoints" / "24" / part)
    resumed = pretrain(out, *REFERENCE)
    assert resumed.returncode == 0, resumed.stderr
    assert f"checkpoints/24: {'array params/' if part == 'params' else ''}" in resumed.stderr
    assert words in resumed.stderr
    assert (out / "damaged-checkpoints" / "24").is_dir()
    assert losses(out) == losses(reference_run)


def test_a_restore_that_fails_for_another_reason_stops_and_moves_nothing(
    reference_run, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    restore = ocp.CheckpointManager.restore

    def failing(self, step, *a, args=None, **kw):
        if "train" in args.keys():  # noqa: SIM118 (a Composite: the arrays, not the meta)
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 2.3GiB")
        return restore(self, step, *a, args=args, **kw)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", failing)
    res = pretrain(out, *REFERENCE)
    assert res.returncode == 2, res.stderr
    assert f"{out}/checkpoints/24 could not be restored" in res.error
    assert "RESOURCE_EXHAUSTED" in res.error
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["16", "24", "8"]
    assert not (out / "damaged-checkpoints").exists()


KILLED_IN_A_SAVE = """
import os, signal, sys, time
from pathlib import Path
import orbax.checkpoint as ocp
from train.pretrain import main

save = ocp.CheckpointManager.save
def killed(self, step, *a, **kw):
    save(self, step, *a, **kw)  # returns while orbax writes in the background
    while step == 16 and not list(Path(self.directory).glob("*.orbax-checkpoint-tmp*")):
        time.sleep(0.001)
    if step == 16:
        os.kill(os.getpid(), signal.SIGKILL)
ocp.CheckpointManager.save = killed
main(sys.argv[1:])
"""


def test_sigkill_in_a_save_then_the_same_command_ends_bitwise_equal(reference_run, tmp_path):
    out = tmp_path / "run"
    argv = pretrain_cmd(out, *REFERENCE)[3:]
    res = subprocess.run(
        [sys.executable, "-c", KILLED_IN_A_SAVE, *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    killed = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert killed == ["16.orbax-checkpoint-tmp", "8"]
    # Killed in its first save: the same folder without checkpoint 8.
    first = tmp_path / "first"
    shutil.copytree(out, first)
    shutil.rmtree(first / "checkpoints" / "8")

    # What a scheduler requeueing the job runs: the same command (fetching metrics at another
    # rhythm changes nothing either; the killed run's was 10).
    resumed = pretrain(out, *REFERENCE, "--log-every", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert "--resume auto: continuing from checkpoint 8" in resumed.stderr
    assert losses(out) == losses(reference_run)  # same floats, step for step
    again = pretrain(first, *REFERENCE)
    assert again.returncode == 0, again.stderr
    assert "--resume auto: no checkpoint" in again.stderr  # started over
    assert losses(first) == losses(reference_run)

    # --resume always on such a folder: one line, and nothing from orbax's cleanup thread.
    half = tmp_path / "half"
    (half / "checkpoints" / "8.orbax-checkpoint-tmp").mkdir(parents=True)
    res = pretrain(half, *REFERENCE, "--resume", "always")
    kernels, heap, *rest = res.stderr.strip().splitlines()  # the run's first two lines
    assert kernels.startswith("kernels: ") and heap.startswith("heap: ")
    assert res.returncode == 2 and rest == [
        f"error: --resume always: no checkpoint in {half}/checkpoints"
    ]


def test_the_modern_recipe_with_muon_resumes_bitwise_from_a_lost_save(tmp_path):
    """Muon's state (momenta under optax.partition's masks) and the switches restore bitwise:
    the finished run with its last checkpoint gone, as a kill in that save leaves it (its
    metrics written; the kill itself is the test above's), continues to the same floats."""
    args = [*REFERENCE, *MODERN, "--max-steps", "16", "--eval-every", "8"]
    reference = pretrain(tmp_path / "reference", *args)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "run"
    shutil.copytree(tmp_path / "reference", out)
    shutil.rmtree(out / "checkpoints" / "16")
    resumed = pretrain(out, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert "--resume auto: continuing from checkpoint 8" in resumed.stderr
    assert losses(out) == losses(tmp_path / "reference")


def test_damaged_model_directory_is_a_one_line_error(tmp_path):
    cfg = GPTConfig.preset("nano")
    Model(cfg, init_params(cfg, jax.random.key(0))).save(tmp_path / "model")
    assert (tmp_path / "model" / "checksums.json").is_file()
    flip_a_byte(tmp_path / "model" / "params")
    gen = run("train.generate", "--ckpt", tmp_path / "model", "--max-new-tokens", "2")
    assert gen.returncode == 2 and gen.stderr == gen.error + "\n"
    assert "does not match its checksum" in gen.error and str(tmp_path / "model") in gen.error


def test_a_failing_save_stops_and_keeps_the_previous_checkpoint(
    reference_run, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    save = ocp.CheckpointManager.save

    def failing(self, step, *a, **kw):
        if step == 16:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, step, *a, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(ocp.CheckpointManager, "save", failing)
        res = pretrain(out, *REFERENCE)
    assert res.returncode == 2, res.stderr
    assert "could not write checkpoint 16" in res.error and "No space left" in res.error
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["8"]
    resumed = pretrain(out, *REFERENCE, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(reference_run)
