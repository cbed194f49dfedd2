"""Data parallel runs equal the single-device run: 8 forced CPU devices under jit (replicated
and FSDP) and pmap, and 2 processes over 127.0.0.1 with gloo, stopped by a signal to one of
them and resumed by both. The single-device runs they are held to run in this process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.runs import MODERN, pretrain, pretrain_cmd

# Alone on the machine (make test runs these after the rest): 8 forced devices starved of CPU by
# a parallel test can miss XLA's 20 s collective rendezvous and abort.
pytestmark = pytest.mark.serial

# A constant learning rate, so a run's length changes none of its steps.
ARGS = ["--batch-size", "8", "--context-length", "32", "--drop-rate", "0", "--min-lr-ratio", "1"]
ARGS += ["--sample-tokens", "0"]


# A device starved of CPU (the single-device runs below share the machine with the 8-device
# process) may reach a collective long after the others, which XLA by default takes for a hang
# after 20 s and aborts; here a slow device is only slow.
PATIENT = [
    "--xla_cpu_collective_timeout_seconds=600",
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
]


def env_with(devices: int) -> dict:
    env = dict(os.environ)
    forced = [f"--xla_force_host_platform_device_count={devices}", *PATIENT]
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *forced]).strip()
    return env


def curve(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return np.array([[r["train_loss"], r["grad_norm"], r.get("val_loss", 0.0)] for r in records])


def single(out, *args):
    """The one-device run, in this process (which has one device)."""
    res = pretrain(out, *ARGS, *args)
    assert res.returncode == 0, res.stderr
    return curve(out)


# Every 8-device run in one process (JAX's device count is fixed when it starts), one at a time.
EIGHT = """
import json, sys
from gptjax.options import run_cli
from train.pretrain import main
folder, recipes = sys.argv[1], json.loads(sys.argv[2])
for recipe, argv in recipes.items():
    for name, extra in [("jit", []), ("fsdp", ["--fsdp"]), ("pmap", ["--parallel", "pmap"])]:
        run_cli(lambda: main([*argv, "--out", f"{folder}/{recipe}/{name}", *extra]))
"""


def eight_devices(folder: Path, recipe: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
    """The 8-device runs of `recipe`, started; its log is a file, not a pipe, so nothing waits
    on its reader."""
    cmd = [sys.executable, "-c", EIGHT, str(folder), json.dumps({recipe: argv})]
    log = folder / f"eight-{recipe}.log"
    with open(log, "w") as err:
        return subprocess.Popen(cmd, cwd=ROOT, env=env_with(8), stdout=err, stderr=err), log


def test_eight_devices_jit_fsdp_and_pmap_equal_one_device(tmp_path):
    """GPT-2 and the modern recipe: replicated jit, FSDP and pmap over 8 devices each equal the
    single-device run (made in this process meanwhile)."""
    recipes = {"gpt2": [], "modern": MODERN}
    args = {k: [*ARGS, "--max-steps", "4", "--eval-every", "2", *v] for k, v in recipes.items()}
    argvs = {k: pretrain_cmd(tmp_path / "unused", *a)[5:] for k, a in args.items()}
    # One 8-device process a recipe: on two cores they and this process's references overlap.
    procs = {k: eight_devices(tmp_path, k, argv) for k, argv in argvs.items()}
    references = {k: single(tmp_path / k / "single", *a) for k, a in args.items()}
    for recipe, (proc, log) in procs.items():
        assert proc.wait(timeout=600) == 0, f"{recipe}: {log.read_text()}"
    for recipe, reference in references.items():
        assert len(reference) == 4
        for name in ("jit", "fsdp", "pmap"):
            got = curve(tmp_path / recipe / name)
            np.testing.assert_allclose(got, reference, rtol=1e-5, err_msg=f"{recipe} {name}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(out, *args) -> list[subprocess.Popen]:
    coordinator = f"127.0.0.1:{free_port()}"
    multi = ["--coordinator", coordinator, "--num-processes", "2", *ARGS, *args]
    return [
        subprocess.Popen(
            pretrain_cmd(out, *multi, "--process-id", str(i)),
            cwd=ROOT,
            env=env_with(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def test_two_processes_stop_together_on_a_signal_to_one_and_resume_equal_to_one(tmp_path):
    out = tmp_path / "multi"
    schedule = ["--eval-every", "1000", "--ckpt-every", "1000"]
    procs = two_processes(out, *schedule, "--max-steps", "2000")
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

    total = ["--max-steps", str(stopped + 2)]  # both continue from the checkpoint of both
    procs = two_processes(out, *schedule, *total)
    reference = single(tmp_path / "single", *schedule, *total)  # while they run
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert f"continuing from checkpoint {stopped}" in errs[0]
    np.testing.assert_allclose(curve(out), reference, rtol=1e-5)
    assert (out / "checkpoints" / str(stopped + 2)).is_dir()
