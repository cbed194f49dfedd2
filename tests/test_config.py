import jax
import pytest

from gptjax import GPTConfig, count_params, init_params


@pytest.mark.parametrize(
    ("name", "alias", "n_params"),
    [
        ("124M", "gpt2", 124_439_808),
        ("355M", "gpt2-medium", 354_823_168),
        ("774M", "gpt2-large", 774_030_080),
        ("1558M", "gpt2-xl", 1_557_611_200),
    ],
)
def test_presets_have_openai_sizes(name, alias, n_params):
    cfg = GPTConfig.preset(name)
    assert GPTConfig.preset(alias) == cfg
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    assert count_params(shapes) == n_params
    assert sorted(shapes) == sorted(
        ["wte", "wpe", "ln_f", *(f"h_{i}" for i in range(cfg.n_layers))]
    )
    assert shapes["h_0"]["attn"]["c_attn"]["kernel"].shape == (cfg.emb_dim, 3 * cfg.emb_dim)
    assert shapes["h_0"]["mlp"]["c_fc"]["kernel"].shape == (cfg.emb_dim, 4 * cfg.emb_dim)


def test_untied_head_and_no_qkv_bias_change_the_tree():
    cfg = GPTConfig.preset("tiny", tie_embeddings=False, qkv_bias=False)
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    assert shapes["lm_head"].shape == (cfg.vocab_size, cfg.emb_dim)
    assert "bias" not in shapes["h_0"]["attn"]["c_attn"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(emb_dim=10, n_heads=3), "emb_dim"),
        (dict(n_layers=0), "n_layers"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(context_length=2.5), "context_length"),
        (dict(drop_rate=1.5), "drop_rate"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset 'gpt3'"):
        GPTConfig.preset("gpt3")


def test_dict_round_trip():
    cfg = GPTConfig.preset("355M", drop_rate=0.0)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_embd": 3})


def test_import_gptjax_gives_its_modules():
    import subprocess
    import sys

    code = (
        "import gptjax; gptjax.tokenizer.gpt2; gptjax.lora.LoRAConfig; gptjax.textdata.load; "
        "gptjax.instruct.collate; gptjax.dpo.dpo_loss; gptjax.GPTClassifier"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
