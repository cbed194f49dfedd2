"""A tokenizer of your own, end to end: `train.tokenizer`, pretraining with `--tokenizer` (bits per
byte beside the loss), and every later command finding it in the run; a tokenizer that does not
fit a model is one line."""

from __future__ import annotations

import json
import math

import pytest

from gptjax.data import bpe
from gptjax.store import Model
from tests.cli import run
from tests.runs import FAST


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tok"
    res = run("train.tokenizer", "--data", "the-verdict", "--vocab-size", "300", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "tokenizer: 300 tokens" in res.stdout and "bytes/token" in res.stdout
    return out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tok):
    out = tmp_path_factory.mktemp("run") / "run"
    res = run("train.pretrain", "--out", out, *FAST, "--tokenizer", tok, "--max-steps", "4",
              "--eval-every", "2", "--doc-mask")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out


def test_pretraining_records_the_tokenizer_and_reports_bits_per_byte(pretrained, tok):
    model = Model.open(pretrained)
    assert model.cfg.vocab_size == 300 and (pretrained / "tokenizer" / bpe.META).is_file()
    assert bpe.fingerprint(model.encoding()) == bpe.fingerprint(bpe.load(tok))
    records = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val_bpb" in r][-1]
    bpb = last["val_loss"] / math.log(2) / last["val_bytes_per_token"]
    assert last["val_bpb"] == pytest.approx(bpb) and 1.0 < last["val_bytes_per_token"] < 4.0
    config = json.loads((pretrained / "config.json").read_text())
    assert config["tokenizer"]["n_vocab"] == 300 and "train.pretrain" in config["command"]


def test_later_commands_use_the_runs_tokenizer(pretrained, tmp_path):
    transformers = pytest.importorskip("transformers")
    res = run("train.generate", "--ckpt", pretrained, "--max-new-tokens", "3")
    assert res.returncode == 0 and "moves you" in res.stdout  # (the prompt cut to the context)
    export = tmp_path / "hf"
    assert run("convert.__main__", "export-hf", pretrained, export).returncode == 0
    hf = transformers.AutoTokenizer.from_pretrained(str(export))
    enc = Model.open(pretrained).encoding()
    text = "I had always thought Jack Gisburn rather a cheap genius<|endoftext|>ok"
    assert hf(text)["input_ids"] == enc.encode(text, allowed_special="all")
    assert json.loads((export / "config.json").read_text())["eos_token_id"] == enc.eot_token


def test_a_tokenizer_that_does_not_fit_is_one_line(pretrained, reference_run, tmp_path):
    # A GPT-2 checkpoint with another tokenizer; a run's own tokenizer, too big for its rows.
    res = run("train.pretrain", "--out", tmp_path / "a", *FAST, "--init-from", reference_run,
              "--tokenizer", pretrained / "tokenizer", "--max-steps", "1")  # fmt: skip
    assert res.returncode == 2 and "was trained with another tokenizer (gpt2)" in res.error
    model = Model.open(pretrained)
    big = bpe.with_specials(model.encoding(), ["<|a|>"])
    Model(model.cfg, model.params, tokenizer=big).save(tmp_path / "m")
    res = run("train.generate", "--ckpt", tmp_path / "m", "--max-new-tokens", "1")
    assert res.returncode == 2 and "the tokenizer has 301 tokens but the model's" in res.error
