"""HellaSwag scoring equals the same computation with Hugging Face transformers (PyTorch) on the
converted model, and bad files are one-line errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convert import from_hf
from gptjax.data import tokenizer
from gptjax.eval import hellaswag
from tests.test_hf_parity import hf_model, torch

EXAMPLES = [
    {
        "ctx": "A man is sitting on a roof. he",
        "label": 3,
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
    },
    {
        "ctx": "A woman cuts bread in the kitchen. She",
        "label": 0,
        "endings": [
            "puts the slices on a plate.",
            "jumps.",
            "throws the knife across the room and sings a long song about the weather.",
            "is a dog.",
        ],
    },
    {
        "ctx": "The dog runs after the ball",
        "label": 1,
        "endings": [
            "and eats it whole, with the grass around it.",
            "and brings it back.",
            "slowly.",
            "then the sun sets behind the hills of the town.",
        ],
    },
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("hellaswag")
    model = hf_model(path, vocab_size=50257, n_positions=48, n_embd=32, n_head=2, n_layer=2)
    cfg, params = from_hf(path)
    return model, cfg, jax.tree.map(jnp.asarray, params)


def hf_losses(model, tokens, mask):
    """build-nanogpt's scoring on transformers' logits: (summed, mean) loss per ending."""
    B, K, L = tokens.shape
    with torch.no_grad():
        logits = model(torch.tensor(tokens.reshape(B * K, L))).logits[:, :-1]
        target = torch.tensor(tokens.reshape(B * K, L), dtype=torch.long)[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    m = torch.tensor(mask.reshape(B * K, L))[:, 1:].float()
    summed = (nll * m).sum(-1)
    return summed.reshape(B, K).numpy(), (summed / m.sum(-1)).reshape(B, K).numpy()


def test_scores_equal_transformers(pair, tmp_path):
    model, cfg, params = pair
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    data = hellaswag.Examples.build(hellaswag.load(path), tokenizer.gpt2(), cfg.context_length)
    assert data.tokens.shape[1:] == (4, 32)  # rows padded to a round length
    summed, mean = hellaswag.ending_losses(cfg, params, data.tokens, data.mask)
    ref_summed, ref_mean = hf_losses(model, data.tokens, data.mask)
    np.testing.assert_allclose(summed, ref_summed, rtol=1e-4)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-4)
    from gptjax.eval.hellaswag import HellaSwag  # the scorer: batches, devices, padding

    got = HellaSwag(cfg, str(path), None, 2, "float32").scores(params)  # 3 examples, batches of 2
    labels = data.labels
    assert got["acc"] == np.mean(ref_summed.argmin(-1) == labels)
    assert got["acc_norm"] == np.mean(ref_mean.argmin(-1) == labels)


def test_long_rows_keep_the_ending_and_bad_files_are_errors(tmp_path):
    enc = tokenizer.gpt2()
    rows, masks = hellaswag.render(EXAMPLES[0], enc, 12)
    assert [len(r) for r in rows] == [12] * 4 and sum(masks[3]) < 12
    assert rows[3][-sum(masks[3]) :] == enc.encode(" " + EXAMPLES[0]["endings"][3])
    assert rows[3][: -sum(masks[3])] == enc.encode(EXAMPLES[0]["ctx"])[-12 + sum(masks[3]) :]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(EXAMPLES[0]) + "\n" + '{"ctx": "x", "endings": ["a"], "label": 0}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected 4 endings"):
        hellaswag.load(bad)
