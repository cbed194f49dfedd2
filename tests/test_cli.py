"""The generate CLI streams text, loads checkpoints, and reports user errors in one line."""

import jax
import numpy as np

from gptjax import GPTConfig, generate, init_params
from gptjax.data import tokenizer
from gptjax.inference.generation import stream
from gptjax.store import Model
from tests.cli import run


def test_generate_from_random_weights_and_checkpoint(tmp_path):
    cfg = GPTConfig(vocab_size=50257, context_length=32, emb_dim=16, n_heads=2, n_layers=1)
    Model(cfg, init_params(cfg, jax.random.key(0))).save(tmp_path / "ckpt")
    args = ["--ckpt", tmp_path / "ckpt", "--max-new-tokens", "8", "--prompt", "Hello"]
    out = run("train.generate", *args)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Hello") and len(out.stdout) > len("Hello\n")
    assert "tok/s" in out.stderr
    again = run("train.generate", *args)
    assert again.stdout == out.stdout  # greedy is deterministic
    sampled = run(
        "train.generate",
        "--preset",
        "nano",
        "--max-new-tokens",
        "5",
        "--temperature",
        "1.0",
        "--top-k",
        "40",
        "--seed",
        "3",
    )
    assert sampled.returncode == 0 and sampled.stdout.startswith("Every effort moves you")


def test_streaming_yields_what_generate_returns():
    cfg = GPTConfig.preset("nano")
    params = init_params(cfg, jax.random.key(0))
    prompt = tokenizer.gpt2().encode("Every effort moves you")
    for kw in ({}, {"temperature": 1.0, "top_k": 40, "rng": jax.random.key(3)}):
        whole = generate(cfg, params, [prompt], max_new_tokens=6, **kw)[0]
        streamed = list(stream(cfg, params, prompt, max_new_tokens=6, **kw))
        np.testing.assert_array_equal(streamed, np.asarray(whole)[len(prompt) :])


def test_user_errors_are_one_line(tmp_path):
    for args, needle in [
        (["--ckpt", tmp_path / "nope"], "no such model folder"),
        (["--max-new-tokens", "500"], "max_new_tokens=500 does not fit"),
        (["--temperature", "-1"], "temperature must be >= 0"),
    ]:
        out = run("train.generate", "--preset", "nano", *args)
        assert out.returncode == 2 and out.stderr == out.error + "\n" and needle in out.error
