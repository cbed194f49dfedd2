"""Data parallel runs equal the single-device run: 8 forced CPU devices under jit (replicated
and FSDP) and pmap, and 2 processes over 127.0.0.1 with gloo."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

# Alone on the machine (make test runs these after the rest): 8 forced devices starved of CPU by
# a parallel test can miss XLA's 20 s collective rendezvous and abort.
pytestmark = pytest.mark.serial

ARGS = [
    "--preset",
    "tiny",
    "--context-length",
    "32",
    "--batch-size",
    "8",
    "--max-steps",
    "4",
    "--drop-rate",
    "0",
    "--lr",
    "1e-3",
    "--eval-every",
    "2",
    "--eval-batches",
    "1",
    "--sample-tokens",
    "2",
    "--no-progress",
]


def env_with(devices: int) -> dict:
    env = dict(os.environ)
    forced = f"--xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {forced}"
    return env


def pretrain(out, *args, devices=1):
    cmd = [sys.executable, "-m", "train.pretrain", "--out", str(out), *ARGS, *args]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env_with(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


def curve(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return np.array([[r["train_loss"], r["grad_norm"], r.get("val_loss", 0.0)] for r in records])


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-device run both comparisons are made against."""
    out = tmp_path_factory.mktemp("single") / "run"
    finish(pretrain(out))
    return curve(out)


def test_eight_devices_jit_fsdp_and_pmap_equal_one_device(tmp_path, single):
    # One run at a time: two 8-device runs sharing CI's two cores can miss XLA's 20 s collective
    # rendezvous and abort.
    reference = single
    assert len(reference) == 4
    for name, extra in [("jit", []), ("fsdp", ["--fsdp"]), ("pmap", ["--parallel", "pmap"])]:
        finish(pretrain(tmp_path / name, *extra, devices=8))
        np.testing.assert_allclose(curve(tmp_path / name), reference, rtol=1e-5, err_msg=name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path, single):
    coordinator = f"127.0.0.1:{free_port()}"
    procs = [
        pretrain(
            tmp_path / "multi",
            "--coordinator",
            coordinator,
            "--num-processes",
            "2",
            "--process-id",
            str(i),
        )
        for i in range(2)
    ]
    for p in procs:
        finish(p)
    np.testing.assert_allclose(curve(tmp_path / "multi"), single, rtol=1e-5)
    assert (tmp_path / "multi" / "checkpoints" / "4").is_dir()


def test_a_signal_to_one_process_stops_both_at_the_same_step(tmp_path):
    import signal
    import time

    coordinator = f"127.0.0.1:{free_port()}"
    out = tmp_path / "multi"
    procs = [
        pretrain(
            out,
            "--coordinator",
            coordinator,
            "--num-processes",
            "2",
            "--process-id",
            str(i),
            "--max-steps",
            "2000",
            "--eval-every",
            "1000",
            "--ckpt-every",
            "1000",
        )
        for i in range(2)
    ]
    metrics, deadline = out / "metrics.jsonl", time.time() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert all(p.poll() is None for p in procs) and time.time() < deadline
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # only the second process is preempted
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs
    stopped = int(errs[0].split("after step ")[1].split(" ")[0])
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [stopped]
    assert len(metrics.read_text().splitlines()) == stopped
