"""from_hf on bad input: one clear error naming the file or tensor."""

import json

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from convert import from_hf
from gptjax import GPTConfig
from gptjax.store import Model

HF_CONFIG = dict(vocab_size=11, n_positions=8, n_embd=8, n_head=2, n_layer=1)


def write_folder(path, tensors, config=HF_CONFIG):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", **config}))
    save_file(tensors, str(path / "model.safetensors"))
    return path


def tensors(prefix="transformer."):
    rng = np.random.default_rng(0)
    D, V, C = 8, 11, 8
    shapes = {
        "wte.weight": (V, D),
        "wpe.weight": (C, D),
        "ln_f.weight": (D,),
        "ln_f.bias": (D,),
        "h.0.ln_1.weight": (D,),
        "h.0.ln_1.bias": (D,),
        "h.0.ln_2.weight": (D,),
        "h.0.ln_2.bias": (D,),
        "h.0.attn.c_attn.weight": (D, 3 * D),
        "h.0.attn.c_attn.bias": (3 * D,),
        "h.0.attn.c_proj.weight": (D, D),
        "h.0.attn.c_proj.bias": (D,),
        "h.0.mlp.c_fc.weight": (D, 4 * D),
        "h.0.mlp.c_fc.bias": (4 * D,),
        "h.0.mlp.c_proj.weight": (4 * D, D),
        "h.0.mlp.c_proj.bias": (D,),
    }
    return {prefix + k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_prefix_optional_and_buffers_ignored(tmp_path):
    t = tensors(prefix="")
    t["h.0.attn.bias"] = np.ones((1, 1, 8, 8), np.float32)
    t["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    cfg, params = from_hf(write_folder(tmp_path / "a", t))
    _, with_prefix = from_hf(write_folder(tmp_path / "b", tensors()))
    assert cfg == GPTConfig(vocab_size=11, context_length=8, emb_dim=8, n_heads=2, n_layers=1)
    np.testing.assert_array_equal(params["h_0"]["mlp"]["c_fc"]["kernel"], t["h.0.mlp.c_fc.weight"])
    np.testing.assert_array_equal(params["wte"]["embedding"], with_prefix["wte"]["embedding"])


def test_missing_tensor_is_named(tmp_path):
    t = tensors()
    del t["transformer.h.0.ln_2.bias"]
    with pytest.raises(ValueError, match=r"model.safetensors.*missing h_0/ln_2/bias"):
        from_hf(write_folder(tmp_path, t))


def test_extra_tensor_is_named(tmp_path):
    t = tensors()
    t["transformer.h.1.ln_1.weight"] = np.ones(8, np.float32)
    with pytest.raises(ValueError, match=r"unexpected h\.1\.ln_1\.weight"):
        from_hf(write_folder(tmp_path, t))


def test_shape_disagreeing_with_config_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"wpe/embedding has shape \(8, 8\), expected \(16, 8\)"):
        from_hf(write_folder(tmp_path, tensors(), {**HF_CONFIG, "n_positions": 16}))


def test_not_a_gpt2_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf(tmp_path)
    write_folder(tmp_path, tensors())
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        from_hf(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    with pytest.raises(ValueError, match="model.safetensors: unreadable"):
        from_hf(tmp_path)


def test_model_checkpoint_round_trip(tmp_path):
    cfg, params = from_hf(write_folder(tmp_path / "hf", tensors()))
    Model(cfg, params).save(tmp_path / "ckpt")
    opened = Model.open(tmp_path / "ckpt")
    cfg2, params2 = opened.cfg, opened.params
    assert cfg2 == cfg
    for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    Model(cfg, params).save(tmp_path / "ckpt")  # overwriting keeps one complete checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "hf"]
    with pytest.raises(ValueError, match="not a gptjax model"):
        Model.open(tmp_path)


def test_hf_cli_writes_a_checkpoint_with_tokenizer_files(tmp_path):
    from tests.cli import run

    folder = write_folder(tmp_path / "hf", tensors())
    res = run("convert.__main__", "hf", folder, tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"params", "config.json", "vocab.bpe"}
    cfg = Model.open(tmp_path / "o").cfg
    assert cfg.emb_dim == 8
