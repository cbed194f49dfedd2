"""Runs that survive preemption, refuse to share a directory and never load a damaged checkpoint."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest

from gptjax import GPTConfig, init_params
from gptjax.training.checkpoint import save_model
from tests.conftest import ROOT
from tests.test_pretrain import cmd, losses, run

# A constant learning rate after warmup, so a run started with a larger --max-steps and stopped
# early continues exactly like one started with 24.
ARGS = ["--max-steps", "24", "--ckpt-every", "8", "--eval-every", "6", "--min-lr-ratio", "1.0"]
ARGS += ["--warmup-steps", "4"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("whole") / "run"
    res = run(out, *ARGS)
    assert res.returncode == 0, res.stderr
    assert (out / "loss.png").stat().st_size > 1000
    lrs = [r["lr"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert lrs[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])  # warmup trains at step 1
    return out


def start(out, *args):
    return subprocess.Popen(
        cmd(out, *args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
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


def test_sigkill_then_the_same_command_logs_the_same_losses_bitwise(whole, tmp_path):
    out = tmp_path / "run"
    proc = start(out, *ARGS)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "8").is_dir() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Fetching metrics at another rhythm changes nothing either (the first run's was 10).
    resumed = run(out, *ARGS, "--log-every", "3")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(whole)  # same floats, step for step


def test_sigterm_checkpoints_the_step_in_flight_and_resume_is_exact(whole, tmp_path):
    sig, code = signal.SIGTERM, 143
    out = tmp_path / "run"
    proc = start(out, *ARGS, "--max-steps", "2000")  # a long run, stopped early
    wait_for_step(proc, out, 10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    stopped = int(err.split("after step ")[1].split(" ")[0])
    assert stopped >= 10 and f"{signal.Signals(sig).name}" in err and "run the same command" in err
    assert "Traceback" not in err
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert steps[-1] == stopped  # nothing after the last finished step is lost
    assert not (out / ".lock").exists()
    if stopped >= 24:
        pytest.skip(f"the run passed step 24 ({stopped}) before the signal arrived")
    resumed = run(out, *ARGS)  # the same run, now to 24 steps; --resume auto finds it
    assert resumed.returncode == 0, resumed.stderr
    assert f"--resume auto: continuing from checkpoint {stopped}" in resumed.stderr
    assert losses(out) == losses(whole)  # same floats, step for step


def test_a_second_signal_still_leaves_a_restorable_run(whole, tmp_path):
    # Ctrl-C twice (SIGINT takes SIGTERM's path: the first asks for a checkpoint, the second
    # stops at once).
    out = tmp_path / "run"
    proc = start(out, *ARGS, "--max-steps", "2000")
    wait_for_step(proc, out, 10)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    resumed = run(out, *ARGS, "--resume")  # the boolean flag of old: --resume always
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(whole)


def test_one_run_per_directory_and_stale_locks(tmp_path):
    out = tmp_path / "run"
    first = start(out, "--max-steps", "2000", "--eval-every", "1000", "--ckpt-every", "1000")
    wait_for_step(first, out, 5)
    holder = json.loads((out / ".lock").read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    second = run(out, "--max-steps", "2000", "--resume")
    assert second.returncode == 2, second.stderr
    assert f"in use by pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.poll() is None, "the first run was still going when refused the second"
    first.send_signal(signal.SIGTERM)  # stopped as a preempted run stops: checkpointed
    _, err = first.communicate(timeout=240)
    assert first.returncode == 143, err
    steps = [s for s, _, _ in losses(out)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 5  # unharmed, no doubles

    # A lock left by a process that died (here: one that has exited) is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    res = run(stale, "--max-steps", "2")
    assert res.returncode == 0, res.stderr
    assert f"pid {dead.pid} on this host is no longer running" in res.stderr
    assert not (stale / ".lock").exists()

    again = run(stale, "--max-steps", "2", "--resume")
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
def test_damaged_newest_checkpoint_falls_back_and_ends_equal(whole, tmp_path, damage, part, words):
    out = tmp_path / "run"
    shutil.copytree(whole, out)  # checkpoints 8, 16 and 24
    damage(out / "checkpoints" / "24" / part)
    resumed = run(out, *ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert f"checkpoints/24: {'array params/' if part == 'params' else ''}" in resumed.stderr
    assert words in resumed.stderr and "Traceback" not in resumed.stderr
    assert (out / "damaged-checkpoints" / "24").is_dir()
    assert losses(out) == losses(whole)


FAILING_RESTORE = """
import sys
import jax
import orbax.checkpoint as ocp
from gptjax.options import run_cli
from train.pretrain import main

restore = ocp.CheckpointManager.restore
def failing(self, step, *a, args=None, **kw):
    if "train" in args.keys():  # the arrays, not the meta
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 2.3GiB")
    return restore(self, step, *a, args=args, **kw)
ocp.CheckpointManager.restore = failing
run_cli(lambda: main(sys.argv[1:]))
"""


def test_a_restore_that_fails_for_another_reason_stops_and_moves_nothing(whole, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    argv = cmd(out, *ARGS)[3:]
    res = subprocess.run(
        [sys.executable, "-c", FAILING_RESTORE, *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 2, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert f"{out}/checkpoints/24 could not be restored" in line and "RESOURCE_EXHAUSTED" in line
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["16", "24", "8"]
    assert not (out / "damaged-checkpoints").exists()


KILLED_IN_FIRST_SAVE = """
import os, signal, sys, time
from pathlib import Path
import orbax.checkpoint as ocp
from train.pretrain import main

save = ocp.CheckpointManager.save
def killed(self, step, *a, **kw):
    save(self, step, *a, **kw)  # returns while orbax writes in the background
    while not list(Path(self.directory).glob("*.orbax-checkpoint-tmp*")):
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)
ocp.CheckpointManager.save = killed
main(sys.argv[1:])
"""


def test_killed_in_its_first_save_the_same_command_starts_over_and_ends_equal(whole, tmp_path):
    out = tmp_path / "run"
    argv = cmd(out, *ARGS)[3:]
    res = subprocess.run(
        [sys.executable, "-c", KILLED_IN_FIRST_SAVE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert "--resume auto: no checkpoint" in res.stderr  # an empty --out: started fresh
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["8.orbax-checkpoint-tmp"]
    again = run(out, *ARGS)  # what a scheduler requeueing the job runs
    assert again.returncode == 0, again.stderr
    assert "--resume auto: no checkpoint" in again.stderr and "Traceback" not in again.stderr
    assert losses(out) == losses(whole)

    # --resume always on such a folder: one line, and nothing from orbax's cleanup thread.
    half = tmp_path / "half"
    (half / "checkpoints" / "8.orbax-checkpoint-tmp").mkdir(parents=True)
    res = run(half, *ARGS, "--resume", "always")
    assert res.returncode == 2 and res.stderr.strip() == (
        f"error: --resume always: no checkpoint in {half}/checkpoints"
    )


def test_damaged_model_directory_is_a_one_line_error(tmp_path):
    cfg = GPTConfig.preset("tiny", n_layers=1)
    save_model(tmp_path / "model", cfg, init_params(cfg, jax.random.key(0)))
    assert (tmp_path / "model" / "checksums.json").is_file()
    flip_a_byte(tmp_path / "model" / "params")
    gen = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.generate",
            "--ckpt",
            str(tmp_path / "model"),
            "--max-new-tokens",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert gen.returncode == 2 and "Traceback" not in gen.stderr
    assert "does not match its checksum" in gen.stderr and str(tmp_path / "model") in gen.stderr
    assert len(gen.stderr.strip().splitlines()) == 1


FAILING_SAVE = """
import errno, sys
import orbax.checkpoint as ocp
from gptjax.options import run_cli
from train.pretrain import main

save = ocp.CheckpointManager.save
def failing(self, step, *a, **kw):
    if step == 16:
        raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, *a, **kw)
ocp.CheckpointManager.save = failing
run_cli(lambda: main(sys.argv[1:]))
"""


def test_a_failing_save_stops_and_keeps_the_previous_checkpoint(whole, tmp_path):
    out = tmp_path / "run"
    argv = cmd(out, *ARGS)[3:]  # the options, without `python -m train.pretrain`
    res = subprocess.run(
        [sys.executable, "-c", FAILING_SAVE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    assert res.returncode == 2, res.stderr
    assert "could not write checkpoint 16" in res.stderr and "No space left" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["8"]
    resumed = run(out, *ARGS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(whole)
