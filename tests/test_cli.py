"""The generate CLI streams text, loads checkpoints, and reports user errors in one line."""

import subprocess
import sys

import jax

from gptjax import GPTConfig, init_params
from gptjax.training.checkpoint import save_model
from tests.conftest import ROOT


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "train.generate", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_generate_from_random_weights_and_checkpoint(tmp_path):
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    save_model(tmp_path / "ckpt", cfg, init_params(cfg, jax.random.key(0)))
    out = run("--ckpt", str(tmp_path / "ckpt"), "--max-new-tokens", "8", "--prompt", "Hello")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Hello") and len(out.stdout) > len("Hello\n")
    assert "tok/s" in out.stderr
    again = run("--ckpt", str(tmp_path / "ckpt"), "--max-new-tokens", "8", "--prompt", "Hello")
    assert again.stdout == out.stdout  # greedy is deterministic
    sampled = run("--max-new-tokens", "5", "--temperature", "1.0", "--top-k", "40", "--seed", "3")
    assert sampled.returncode == 0 and sampled.stdout.startswith("Every effort moves you")


def test_user_errors_are_one_line(tmp_path):
    for args, needle in [
        (["--ckpt", str(tmp_path / "nope")], "no such checkpoint directory"),
        (["--max-new-tokens", "500"], "max_new_tokens=500 does not fit"),
        (["--temperature", "-1"], "temperature must be >= 0"),
    ]:
        out = run(*args)
        assert out.returncode == 2
        assert needle in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
