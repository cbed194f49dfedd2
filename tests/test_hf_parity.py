"""Logits and greedy generations equal Hugging Face transformers' GPT-2 (PyTorch, float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convert import from_hf
from gptjax import GPT, generate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = {
    "small": dict(vocab_size=128, n_positions=32, n_embd=32, n_head=4, n_layer=2),
    "odd": dict(vocab_size=97, n_positions=19, n_embd=36, n_head=3, n_layer=3),
    "untied": dict(
        vocab_size=101, n_positions=24, n_embd=48, n_head=6, n_layer=2, tie_word_embeddings=False
    ),
}


def hf_model(tmp_path, seed=0, **kw):
    """A random HF GPT-2 with every tensor perturbed off its init, saved with save_pretrained."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        **kw, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    return model


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = hf_model(path, **CONFIGS[request.param])
    cfg, params = from_hf(path)
    return model, cfg, jax.tree.map(jnp.asarray, params)


def test_logits_match(pair):
    model, cfg, params = pair
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, cfg.context_length))
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(GPT(cfg).apply({"params": params}, jnp.asarray(ids)))
    assert np.abs(ours - ref).max() < 1e-4


def test_greedy_generation_matches(pair):
    model, cfg, params = pair
    prompt = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 5))
    n = cfg.context_length - 5
    with torch.no_grad():
        ref = model.generate(
            torch.tensor(prompt),
            attention_mask=torch.ones(prompt.shape, dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        ).numpy()
    np.testing.assert_array_equal(generate(cfg, params, prompt, max_new_tokens=n), ref)


def test_tiny_preset_vocabulary_parity(tmp_path):
    """The real GPT-2 vocabulary size at a small width."""
    kw = dict(vocab_size=50257, n_positions=64, n_embd=64, n_head=2, n_layer=1)
    model = hf_model(tmp_path, seed=3, **kw)
    cfg, params = from_hf(tmp_path)
    ids = np.random.default_rng(2).integers(0, 50257, (1, 64))
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(GPT(cfg).apply({"params": params}, jnp.asarray(ids)))
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.parametrize(
    "switches",
    [{}, {"qkv_bias": False}, {"activation": "relu2", "tie_embeddings": False}],
    ids=["gpt2", "no-qkv-bias", "relu2-untied"],
)
def test_export_round_trip_loads_in_transformers(tmp_path, switches):
    """GPT-2, and the switches Hugging Face's GPT-2 can hold (zero biases, relu2, its own
    head), give the same logits there."""
    from convert import to_hf
    from gptjax import GPTConfig, init_params

    cfg = GPTConfig(
        vocab_size=64,
        context_length=16,
        emb_dim=32,
        n_heads=4,
        n_layers=2,
        drop_rate=0.0,
        **switches,
    )
    params = jax.tree.map(lambda x: x + 0.05, init_params(cfg, jax.random.key(0)))
    to_hf(cfg, params, tmp_path / "hf")
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = np.random.default_rng(0).integers(0, 64, (2, 16))
    with torch.no_grad():
        ref = model(torch.tensor(ids)).logits.numpy()
    ours = np.asarray(GPT(cfg).apply({"params": params}, jnp.asarray(ids)))
    assert np.abs(ours - ref).max() < 1e-4
    cfg2, params2 = from_hf(tmp_path / "hf")
    assert cfg2.emb_dim == cfg.emb_dim and cfg2.qkv_bias
    assert (cfg2.activation, cfg2.tie_embeddings) == (cfg.activation, cfg.tie_embeddings)
    np.testing.assert_array_equal(params2["wte"]["embedding"], params["wte"]["embedding"])


def test_from_hf_to_hf_gives_identical_logits(pair, tmp_path):
    from convert import to_hf

    model, cfg, params = pair
    exported = transformers.GPT2LMHeadModel.from_pretrained(to_hf(cfg, params, tmp_path / "x"))
    ids = torch.tensor(
        np.random.default_rng(3).integers(0, cfg.vocab_size, (2, cfg.context_length))
    )
    with torch.no_grad():
        np.testing.assert_array_equal(
            exported.eval()(ids).logits.numpy(), model(ids).logits.numpy()
        )


TEXTS = [
    "Every effort moves you",
    "naïve café — 東京 🚀 ünïcödé",
    "  leading spaces,\ttabs\t\tand\n\n\nnewlines   ",
    "one<|endoftext|>two <|endoftext|> three",
    "x" * 300 + " 12345678 3.14159",
]


def test_exported_folder_carries_its_tokenizer(tmp_path, monkeypatch):
    """transformers needs nothing but the exported folder: AutoTokenizer gives tiktoken's ids
    and a greedy text-generation pipeline writes what gptjax.generate does."""
    from convert import to_hf
    from gptjax import GPTConfig, init_params, tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the hub
    cfg = GPTConfig.preset("tiny", context_length=64, emb_dim=64, n_heads=2, n_layers=1)
    params = init_params(cfg, jax.random.key(0))
    folder = to_hf(cfg, params, tmp_path / "hf")
    enc = tokenizer.gpt2()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert tok.model_max_length == 64 and tok.eos_token_id == 50256
    for text in TEXTS:
        want = enc.encode(text, allowed_special={"<|endoftext|>"})
        assert tok(text)["input_ids"] == want, text
        assert tok.decode(want) == text

    prompt = "Every effort moves you"
    ids = np.asarray([enc.encode(prompt)])
    ours = enc.decode(np.asarray(generate(cfg, params, ids, max_new_tokens=8))[0].tolist())
    pipe = transformers.pipeline("text-generation", model=str(folder), device="cpu")
    out = pipe(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert out == ours
