"""The recipe bench: tokens to a target read off validation curves, the rows a recipe file
makes, and a whole (nano-sized) run through `gptjax bench recipe`."""

import json

import pytest

from tests.cli import run
from train.bench.recipe import recipes, tokens_to

CURVE = [(100, 6.0), (200, 5.0), (300, 4.5)]


def test_tokens_to_target_interpolates_between_evaluations():
    assert tokens_to(5.0, CURVE) == 200
    assert tokens_to(4.75, CURVE) == pytest.approx(250)
    assert tokens_to(7.0, CURVE) == 100  # there at the first evaluation
    assert tokens_to(4.0, CURVE) is None


def test_recipe_rows(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('preset = "nano"\nposition = "rotary"\nrope_base = 500.0\noptimizer = "muon"\n')
    rows = recipes(str(path), ablate=True)
    assert rows["gpt2"] == {} and rows["modern"] == {
        "position": "rotary",
        "rope_base": 500.0,
        "optimizer": "muon",
    }
    assert rows["position"] == {"position": "rotary", "rope_base": 500.0}
    assert rows["optimizer"] == {"optimizer": "muon"} and rows["window"] == {"window": 128}
    assert "norm" not in rows  # the file leaves it off
    path.write_text('preset = "nano"\n')
    with pytest.raises(ValueError, match="sets none of the switches"):
        recipes(str(path), ablate=False)


def test_bench_trains_both_recipes_and_prints_json_and_a_plot(tmp_path):
    recipe = tmp_path / "nano.toml"
    recipe.write_text(
        'data = "the-verdict"\npreset = "nano"\ncontext_length = 16\nbatch_size = 2\n'
        "max_steps = 4\neval_every = 2\neval_batches = 1\nsample_tokens = 0\nlr = 1e-3\n"
        'position = "rotary"\nnorm = "rmsnorm"\noptimizer = "muon"\n'
    )
    out = tmp_path / "bench"
    res = run("train.cli", "bench", "recipe", "--recipe", recipe, "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["recipe"] for r in rows] == ["gpt2", "modern"]
    for r in rows:
        assert r["tokens"] == 4 * 2 * 16 and r["val_loss"] > 0
        assert r["tokens_to_target"] is None or r["tokens_to_target"] <= r["tokens"]
    assert rows[0]["tokens_to_target"] is not None  # GPT-2 reaches its own final loss
    assert (out / "recipe.png").stat().st_size > 0
    assert "rotary" not in (out / "gpt2" / "recipe.yaml").read_text()
    assert "rotary" in (out / "modern" / "recipe.yaml").read_text()
