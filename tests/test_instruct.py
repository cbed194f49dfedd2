"""Instruction data and DPO maths: the book's template and collate, buckets, records, losses."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gptjax import GPTConfig, init_params
from gptjax.data import instruct
from gptjax.training import dpo
from gptjax.training.steps import loss_sum

torch = pytest.importorskip("torch")


def test_format_prompt_is_the_books_template():
    entry = {"instruction": "Convert to passive.", "input": "The cat ate it.", "output": "x"}
    assert instruct.format_prompt(entry) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nConvert to passive.\n\n### Input:\n"
        "The cat ate it."
    )
    no_input = instruct.format_prompt({**entry, "input": ""})
    assert no_input.endswith("### Instruction:\nConvert to passive.")
    assert instruct.training_text(entry).endswith("The cat ate it.\n\n### Response:\nx")


def book_collate(
    batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, prompt_lengths=None
):
    """The book's custom_collate_fn (chapter 7), with exercise 7.2's instruction masking."""
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for i, item in enumerate(batch):
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if prompt_lengths is not None:
            targets[: prompt_lengths[i] - 1] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst).numpy(), torch.stack(targets_lst).numpy()


@pytest.mark.parametrize("max_length", [None, 7])
@pytest.mark.parametrize("masked", [False, True], ids=["all-targets", "responses-only"])
def test_collate_equals_the_books_function(max_length, masked):
    rng = np.random.default_rng(0)
    for _ in range(20):
        lists = [rng.integers(0, 50256, rng.integers(1, 12)).tolist() for _ in range(4)]
        prompts = [int(rng.integers(1, len(t) + 1)) for t in lists] if masked else None
        ours = instruct.collate(lists, max_length=max_length, prompt_lengths=prompts)
        inputs, targets = book_collate(lists, allowed_max_length=max_length, prompt_lengths=prompts)
        np.testing.assert_array_equal(ours["inputs"], inputs)
        np.testing.assert_array_equal(ours["targets"], targets)


def test_collate_decides_padding_by_length_not_token_value():
    out = instruct.collate([[5, 50256, 7], [9]])
    assert out["targets"].tolist() == [[50256, 7, 50256], [50256, -100, -100]]


def test_bucket_padding_changes_no_loss():
    cfg = GPTConfig(vocab_size=50257, context_length=128, emb_dim=16, n_heads=2, n_layers=1)
    params = init_params(cfg, jax.random.key(0))
    seqs = instruct.Sequences([[1, 2, 3, 4, 5], list(range(10, 40)), [7, 8]], max_length=128)
    batch = seqs.batch(np.arange(3))
    assert batch["inputs"].shape == (3, 64)  # bucketed from 30
    tight = instruct.collate(seqs.tokens)
    loss = jax.jit(lambda p, b: loss_sum(p, cfg, b, None, train=False))
    a, b = loss(params, batch), loss(params, tight)
    np.testing.assert_allclose([float(a[0]), float(a[1])], [float(b[0]), float(b[1])], rtol=1e-6)
    assert instruct.bucket(65, 100) == 100 and instruct.bucket(1000, 1024) == 1024
    assert seqs.buckets(1, seed=0) == {64: 3}


def test_book_split_and_bad_records(tmp_path):
    parts = instruct.split(instruct.load_entries("instruction-data"))
    assert [len(parts[s]) for s in ("train", "test", "validation")] == [935, 110, 55]
    bad = [
        (
            [{"instruction": "a", "output": "b"}, {"instruction": "c"}],
            "record 1: missing key 'output'",
        ),
        ([{"instruction": "a", "input": 3, "output": "b"}], "record 0: 'input' must be a string"),
        ([{"instruction": "a", "output": "  "}], "record 0: empty 'output'"),
        ({"instruction": "a"}, "expected a non-empty list"),
    ]
    for records, needle in bad:
        path = tmp_path / "data.json"
        path.write_text(json.dumps(records))
        with pytest.raises(ValueError, match=needle) as e:
            instruct.load_entries(str(path))
        assert str(path) in str(e.value)
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    assert len(instruct.load_entries(str(jsonl))) == 2


def test_sequence_logprob_and_dpo_loss_follow_their_formulas():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (3, 5))
    mask = rng.random((3, 5)) > 0.3
    mask[:, 0] = True
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0] * mask
    summed = dpo.sequence_logprob(logits, targets, mask, average=False)
    np.testing.assert_allclose(summed, picked.sum(1), rtol=1e-5)
    np.testing.assert_allclose(
        dpo.sequence_logprob(logits, targets, mask), picked.sum(1) / mask.sum(1), rtol=1e-5
    )

    pc, pr, rc, rr = (rng.normal(size=4).astype(np.float32) for _ in range(4))
    loss, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta=0.5)
    margin = 0.5 * ((pc - rc) - (pr - rr))
    np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-margin))), rtol=1e-5)
    np.testing.assert_allclose(chosen, 0.5 * (pc - rc), rtol=1e-6)
    np.testing.assert_allclose(rejected, 0.5 * (pr - rr), rtol=1e-6)
    # TRL's sigmoid loss on summed log-probs: -logsigmoid(beta * (pi_logratios - ref_logratios))
    trl = -torch.nn.functional.logsigmoid(
        0.5 * (torch.tensor(pc - pr) - torch.tensor(rc - rr))
    ).mean()
    np.testing.assert_allclose(loss, trl.numpy(), rtol=1e-5)
    same, _, _ = dpo.dpo_loss(pc, pr, pc, pr)
    assert float(same) == pytest.approx(math.log(2), abs=1e-7)
    assert float(jnp.float32(same)) == float(jnp.float32(math.log(2)))  # exactly log 2
