"""Narrow weight formats (`gptjax.model.weights`): the digits rebuild each row, the matmul equals
the dequantised product, a narrow model keeps its names and stays near fp32, the KV cache still
equals recompute, and generate, the engine and both benches take --weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gptjax import GPT, generate
from gptjax.inference.engine import Engine
from gptjax.model.weights import digits, narrow, narrow_matmul, quantize, weights_of
from tests.cli import run
from tests.test_generation import CFG, PROMPT, naive_generate
from tests.test_generation import params as params
from train import serve
from train.bench import weights as bench_weights

NARROW = [("bf16", jnp.bfloat16), ("int8", jnp.int8)]


def rel_rms(a, b) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(a - b))) / jnp.std(a))


def test_int8_digits_rebuild_each_row_to_half_a_step():
    x = jax.random.normal(jax.random.key(0), (4, 64)) * jnp.array([[1e-3], [1.0], [300.0], [0.0]])
    d, weight, step = digits(x, jnp.int8)
    assert d.dtype == jnp.int8 and d.shape == (8, 64)
    # A digit out of int8's range would have wrapped round and rebuilt a wrong value.
    rebuilt = (d[:4].astype(jnp.float32) * weight + d[4:]) * step
    assert jnp.all(jnp.abs(rebuilt - x) <= 0.5001 * step)
    assert jnp.all(rebuilt[3] == 0)  # a zero row stays zero (no division by a zero step)
    hi, _, _ = digits(x.astype(jnp.float32), jnp.bfloat16)
    high, low = hi[:4].astype(jnp.float32), hi[4:].astype(jnp.float32)
    assert jnp.all(jnp.abs(high + low - x) <= jnp.abs(x) * 2.0**-15)


@pytest.mark.parametrize("name,dtype", NARROW)
def test_narrow_matmul_equals_the_dequantised_product(name, dtype):
    w = jax.random.normal(jax.random.key(1), (48, 32))  # [N, K]
    x = jax.random.normal(jax.random.key(2), (2, 3, 32)) * 5.0
    q, scale = narrow(w, dtype)
    assert q.dtype == dtype and scale.shape == (48,)
    dequantised = q.astype(jnp.float32) * scale[:, None]
    assert float(jnp.max(jnp.abs(dequantised - w))) <= float(jnp.max(scale)) * (
        0.5 if name == "int8" else 2.0**-8
    )
    got, want = narrow_matmul(x, q, scale), x @ dequantised.T
    assert got.shape == (2, 3, 48)
    assert float(jnp.max(jnp.abs(got - want))) < 1e-4 * float(jnp.max(jnp.abs(want)))


@pytest.mark.parametrize("name,dtype", NARROW)
def test_a_narrow_model_keeps_its_names_and_stays_near_fp32(params, name, dtype):
    q = quantize(params, name)
    flat, fq = traverse_util.flatten_dict(params), traverse_util.flatten_dict(q)
    assert {p for p in fq if not p[-1].endswith("_scale")} == set(flat)
    kernel = ("h_0", "mlp", "c_fc", "kernel")
    assert fq[kernel].shape == flat[kernel].shape[::-1] and fq[kernel].dtype == dtype
    assert fq[("wte", "embedding")].dtype == dtype and fq[("wte", "embedding_scale")].shape == (61,)
    assert fq[("wpe", "embedding")].dtype == jnp.float32  # a step gathers one row: left wide
    assert weights_of(q) == name and weights_of(params) == "fp32"
    tokens = jnp.asarray(PROMPT)
    forward = jax.jit(GPT(CFG).apply)
    ref, got = (forward({"params": p}, tokens) for p in (params, q))
    assert rel_rms(ref, got) < (0.05 if name == "int8" else 0.01)


@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_kv_cache_decode_equals_full_recompute_with_narrow_weights(params, name):
    q = quantize(params, name)
    out = generate(CFG, q, PROMPT, max_new_tokens=8)
    ref = naive_generate(q, PROMPT, 8, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out), ref)
    # The engine (the server's decoder) runs the same tree to the same greedy tokens.
    engine = Engine(CFG, q, slots=2)
    got = engine.complete([list(r) for r in PROMPT], max_tokens=8, seeds=[0, 1], temperature=0.0)
    np.testing.assert_array_equal(np.asarray(got), ref[:, PROMPT.shape[1] :])


def test_quantize_refuses_an_unknown_format_and_a_second_pass(params):
    assert quantize(params, "fp32") is params
    with pytest.raises(
        ValueError, match="unknown weights 'int4'; expected one of: fp32, bf16, int8"
    ):
        quantize(params, "int4")
    with pytest.raises(ValueError, match="already int8"):
        quantize(quantize(params, "int8"), "bf16")


def test_generate_cli_takes_weights_and_refuses_a_bad_one():
    args = ["--preset", "nano", "--prompt", "Every effort", "--max-new-tokens", "3"]
    res = run("train.generate", *args, "--weights", "int8")
    assert res.returncode == 0 and res.stdout.startswith("Every effort"), res.stderr
    res = run("train.generate", *args, "--weights", "int4")
    assert res.returncode == 2 and "--weights" in res.error and "int8" in res.error


def test_quality_bench_scores_each_format_against_fp32(capsys):
    sizes = ["--seq-len", "16", "--windows", "2", "--prompts", "2", "--prompt-len", "4"]
    bench_weights.main(["--preset", "nano", *sizes, "--new-tokens", "4", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["weights"] for r in rows] == ["fp32", "bf16", "int8"]
    assert rows[0]["delta_loss"] == 0 and rows[0]["top1_agreement"] == 1.0
    assert all(r["positions"] == 32 and r["greedy_tokens"] == 8 for r in rows)
    assert all(abs(r["delta_loss"]) < 0.05 and r["top1_agreement"] > 0.5 for r in rows)


def test_serve_decodes_from_the_format_it_is_given():
    served = serve.load(serve.Options(preset="nano", weights="int8"))
    assert weights_of(served.engine.params) == "int8"
