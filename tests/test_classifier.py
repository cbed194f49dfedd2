"""GPTClassifier equals Hugging Face's GPT2ForSequenceClassification; HF folders round-trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from convert import from_hf, hf_labels, to_hf
from gptjax import GPTClassifier, GPTConfig, init_classifier, init_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PAD = 63
HF = dict(vocab_size=64, n_positions=24, n_embd=32, n_head=4, n_layer=2, num_labels=3)


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A random HF classifier with every tensor perturbed, saved, and read back as ours."""
    path = tmp_path_factory.mktemp("hf-cls")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        **HF,
        pad_token_id=PAD,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        id2label={0: "neg", 1: "neu", 2: "pos"},
    )
    model = transformers.GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    cfg, params = from_hf(path)
    return model, path, cfg, params


def padded(lengths, T, *, left, seed=0):
    """Rows of random non-pad tokens with these lengths, padded to T on the left or right."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), T), PAD, np.int64)
    mask = np.zeros((len(lengths), T), np.int64)
    for i, n in enumerate(lengths):
        sl = slice(T - n, T) if left else slice(0, n)
        ids[i, sl], mask[i, sl] = rng.integers(0, PAD, n), 1
    return ids, mask


def hf_logits(model, ids, mask):
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
        )
    return out.logits.numpy()


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
def test_logits_equal_hf_classifier(hf_pair, left):
    model, _, cfg, params = hf_pair
    ids, mask = padded([24, 7, 15, 1], 24, left=left)
    ours = GPTClassifier(cfg, 3, pad_id=PAD).apply({"params": params}, jnp.asarray(ids))
    assert ours.shape == (4, 3) and ours.dtype == jnp.float32
    assert np.abs(np.asarray(ours) - hf_logits(model, ids, mask)).max() < 1e-4


def test_padding_never_changes_a_rows_logits(hf_pair):
    _, _, cfg, params = hf_pair
    apply = jax.jit(lambda ids: GPTClassifier(cfg, 3, pad_id=PAD).apply({"params": params}, ids))
    lengths = [5, 12, 9]
    alone = [apply(padded([n], n, left=False, seed=i)[0])[0] for i, n in enumerate(lengths)]
    for left in (False, True):
        for T in (12, 20):
            rows = [padded([n], T, left=left, seed=i)[0][0] for i, n in enumerate(lengths)]
            out = apply(np.stack(rows))
            for i in range(len(lengths)):
                np.testing.assert_allclose(out[i], alone[i], atol=1e-5)


def test_last_pooling_reads_the_final_position():
    cfg = GPTConfig(vocab_size=64, context_length=16, emb_dim=16, n_heads=2, n_layers=1)
    params = init_classifier(cfg, 2, jax.random.key(0))
    ids = np.array([[5, 6, 7, PAD, PAD]])
    last = jax.jit(GPTClassifier(cfg, 2, pad_id=PAD, pooling="last").apply)({"params": params}, ids)
    classify = jax.jit(GPTClassifier(cfg, 2, pad_id=PAD).apply)
    pooled = classify({"params": params}, ids)
    assert not np.allclose(last, pooled)  # the book's pooling sees the pads
    plain = classify({"params": params}, ids[:, :3])
    np.testing.assert_allclose(pooled, plain, atol=1e-6)


def test_hf_round_trip_is_bit_identical(hf_pair, tmp_path):
    model, path, cfg, params = hf_pair
    assert hf_labels(path) == {"labels": ["neg", "neu", "pos"], "pad_id": PAD}
    assert params["score"]["kernel"].shape == (32, 3) and "lm_head" not in params
    to_hf(cfg, params, tmp_path / "out", labels=["neg", "neu", "pos"], pad_id=PAD)
    before, after = (
        load_file(path / "model.safetensors"),
        load_file(tmp_path / "out" / "model.safetensors"),
    )
    for name, value in before.items():
        key = name if name in after else f"transformer.{name}"
        np.testing.assert_array_equal(after[key], value, err_msg=name)
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert again.config.num_labels == 3 and again.config.pad_token_id == PAD
    assert again.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    ids, mask = padded([20, 4], 20, left=False)
    np.testing.assert_array_equal(hf_logits(again.eval(), ids, mask), hf_logits(model, ids, mask))


def test_classifier_from_a_language_model_drops_the_head():
    cfg = GPTConfig(
        vocab_size=64, context_length=16, emb_dim=16, n_heads=2, n_layers=1, tie_embeddings=False
    )
    base = init_params(cfg, jax.random.key(0))
    params = init_classifier(cfg, 4, jax.random.key(1), base=base)
    assert "lm_head" not in params and params["score"]["kernel"].shape == (16, 4)
    assert params["h_0"] is base["h_0"]
