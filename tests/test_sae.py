"""Sparse autoencoders: SAELens opens what gptjax writes and encodes and decodes the same
activations to the same numbers (TopK and ReLU); `train.sae` streams a hook point's activations
through the one training loop, resumes exactly and reports L0, explained variance, dead latents
and the cross entropy with the SAE spliced in."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import GPTConfig, init_params
from gptjax.probe import sae as sparse
from gptjax.store import Model
from gptjax.training.runlog import read_metrics
from tests.cli import run

torch = pytest.importorskip("torch")
sae_lens = pytest.importorskip("sae_lens")


def perturbed(cfg: sparse.SAEConfig, key) -> dict:
    """An SAE whose biases and weights are all away from their initial values."""
    params = sparse.init_sae(cfg, key)
    noise = lambda k, x: x + 0.1 * jax.random.normal(k, x.shape)
    keys = jax.random.split(key, len(params))
    return {name: noise(k, v) for k, (name, v) in zip(keys, sorted(params.items()), strict=True)}


@pytest.mark.parametrize("architecture", ["topk", "relu"])
def test_saelens_opens_ours_and_encodes_and_decodes_alike(tmp_path, architecture):
    cfg = sparse.SAEConfig(
        16, 64, architecture, k=5, metadata={"hook_name": "blocks.0.hook_resid_post"}
    )
    params = perturbed(cfg, jax.random.key(0))
    out = sparse.save(cfg, params, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(str(out))
    assert theirs.cfg.architecture() == {"topk": "topk", "relu": "standard"}[architecture]
    x = np.asarray(jax.random.normal(jax.random.key(1), (32, 16)))
    z = sparse.encode(cfg, params, jnp.asarray(x))
    with torch.no_grad():
        their_z = theirs.encode(torch.tensor(x))
        their_x = theirs.decode(their_z)
    np.testing.assert_allclose(z, their_z.numpy(), atol=1e-5)
    np.testing.assert_allclose(sparse.decode(params, z), their_x.numpy(), atol=1e-5)
    if architecture == "topk":
        assert int(jnp.max(jnp.sum(z > 0, -1))) <= 5
    back_cfg, back = sparse.load(out)
    assert back_cfg == cfg and all(np.array_equal(back[k], params[k]) for k in params)


def test_an_sae_trains_on_streamed_activations_and_resumes_exactly(tmp_path):
    cfg = GPTConfig.preset("nano", context_length=32)
    Model(cfg, init_params(cfg, jax.random.key(0))).save(tmp_path / "model")
    args = [*("--ckpt", tmp_path / "model", "--hook", "blocks.1.hook_resid_mid"), "--no-progress"]
    args += ["--expansion", "4", "--k", "8", "--batch-size", "4", "--eval-every", "2"]
    args += ["--eval-batches", "2", "--lr", "1e-2"]
    whole, halves = tmp_path / "whole", tmp_path / "halves"
    res = run("train.sae", *args, "--out", whole, "--max-steps", "4")
    assert res.returncode == 0, res.stderr
    assert "SAE on blocks.1.hook_resid_mid: 32 -> 128 latents (TopK k=8)" in res.stdout
    assert run("train.sae", *args, "--out", halves, "--max-steps", "2").returncode == 0
    again = run("train.sae", *args, "--out", halves, "--max-steps", "4")
    assert again.returncode == 0 and "continuing from checkpoint 2" in again.stderr
    records = read_metrics(whole, timing=False)
    assert records == read_metrics(halves, timing=False)
    evals = [r for r in records if "val_l0" in r]
    assert [r["step"] for r in evals] == [2, 4]
    last = evals[-1]
    assert 0 < last["val_l0"] <= 8 and 0 <= last["val_dead"] < 1
    assert 0 < last["val_explained_variance"] <= 1
    assert last["val_ce_clean"] > 0 and np.isfinite(last["val_ce_sae"])
    assert records[0]["train_loss"] > records[-1]["train_loss"]  # it learns
    assert (whole / "sae.png").is_file()
    theirs = sae_lens.SAE.load_from_disk(str(whole / "sae"))
    assert theirs.cfg.d_sae == 128 and theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_mid"
    # the report card shows them
    assert run("train.report", whole, "--out", tmp_path / "card").returncode == 0
    (entry,) = json.loads((tmp_path / "card" / "report.json").read_text())["runs"]
    assert entry["stage"] == "sparse autoencoder"
    assert entry["figures"]["SAE L0"] == last["val_l0"] and "CE with the SAE" in entry["figures"]


def test_a_hook_point_an_sae_cannot_read_is_one_line(tmp_path):
    cfg = GPTConfig.preset("nano", context_length=32)
    Model(cfg, init_params(cfg, jax.random.key(0))).save(tmp_path / "model")
    base = ["--ckpt", tmp_path / "model", "--out", tmp_path / "r", "--max-steps", "1"]
    res = run("train.sae", *base, "--hook", "blocks.0.attn.hook_pattern")
    assert res.returncode == 2 and "its activations are 4-D" in res.error
    res = run("train.sae", *base, "--hook", "blocks.7.hook_resid_post")
    assert res.returncode == 2 and "no such hook point in this model" in res.error
