"""Runs that survive preemption, refuse to share a directory and never load a damaged checkpoint."""

import json
import os
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

# A constant learning rate, so a run started with a larger --max-steps and stopped early
# continues exactly like one started with 24.
ARGS = ["--max-steps", "24", "--ckpt-every", "8", "--eval-every", "6", "--min-lr-ratio", "1.0"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    res = run(out, *ARGS)
    assert res.returncode == 0, res.stderr
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


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_checkpoints_the_step_in_flight_and_resume_is_exact(whole, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = start(out, *ARGS, "--max-steps", "2000")  # a long run, stopped early
    wait_for_step(proc, out, 10)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    stopped = int(err.split("after step ")[1].split(" ")[0])
    assert stopped >= 10 and f"{signal.Signals(sig).name}" in err and "--resume" in err
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert steps[-1] == stopped  # nothing after the last finished step is lost
    assert not (out / ".lock").exists()
    if stopped >= 24:
        pytest.skip(f"the run passed step 24 ({stopped}) before the signal arrived")
    resumed = run(out, *ARGS, "--resume")  # the same run, now to 24 steps
    assert resumed.returncode == 0, resumed.stderr
    assert losses(out) == losses(whole)  # same floats, step for step


def test_a_second_signal_still_leaves_a_restorable_run(whole, tmp_path):
    out = tmp_path / "run"
    proc = start(out, *ARGS, "--max-steps", "2000")
    wait_for_step(proc, out, 10)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    resumed = run(out, *ARGS, "--resume")
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


def test_damaged_newest_checkpoint_falls_back_and_ends_equal(whole, tmp_path):
    out = tmp_path / "run"
    first = run(out, *ARGS, "--max-steps", "20")  # checkpoints 8, 16 and 20
    assert first.returncode == 0, first.stderr
    flip_a_byte(out / "checkpoints" / "20" / "params")
    resumed = run(out, *ARGS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "checkpoints/20: array params/" in resumed.stderr
    assert "does not match its checksum" in resumed.stderr
    assert (out / "damaged-checkpoints" / "20").is_dir()
    assert losses(out) == losses(whole)


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
