"""`train.prepare` writes llm.c shards (read back here with a plain numpy reader of the format),
resumes after an interruption, and `train.pretrain` trains on them and on llm.c's own."""

import gzip
import json

import numpy as np
import pytest

from gptjax.data import tokenizer
from gptjax.data.shards import ShardWindows, read_shard, shard_windows, write_shard
from tests.cli import run
from train import prepare, pretrain

SETTINGS = ["--shard-tokens", "700", "--val-tokens", "300", "--name", "mini"]


def llmc_read(path) -> np.ndarray:
    """llm.c's reader, spelled out: 256 int32 header (magic, version, count), uint16 tokens."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), np.int32)
        assert (header[0], header[1]) == (20240520, 1)
        tokens = np.frombuffer(f.read(), np.uint16)
    assert len(tokens) == header[2]
    return tokens


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
        "café",
    ]
    texts = [f"Doc {i}: " + " ".join(rng.choice(words, rng.integers(1, 40))) for i in range(80)]
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"id": 1, "text": t}) + "\n")
    enc = tokenizer.gpt2()
    want = np.concatenate([[tokenizer.EOT_ID, *enc.encode_ordinary(t)] for t in texts])
    return path, want


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    res = run("train.prepare", corpus[0], "--out", out, "--workers", "2", *SETTINGS)
    assert res.returncode == 0, res.stderr
    assert "per worker, 2 workers" in res.stdout
    return out


def test_shards_hold_eot_and_tokens_of_each_document_in_order(corpus, prepared):
    files = sorted(prepared.glob("*.bin"))
    assert files[-1].name == "mini_val_000000.bin"  # "train" sorts before "val"
    val, train = files[-1], files[:-1]
    assert [f.name for f in train] == [f"mini_train_{i:06d}.bin" for i in range(1, len(train) + 1)]
    sizes = [len(llmc_read(f)) for f in [val, *train]]
    assert sizes[0] == 300 and all(n == 700 for n in sizes[1:-1]) and 0 < sizes[-1] <= 700
    got = np.concatenate([llmc_read(f) for f in [val, *train]])
    np.testing.assert_array_equal(got, corpus[1])


def test_interrupted_prepare_resumes_at_the_first_missing_shard(
    corpus, prepared, tmp_path, monkeypatch
):
    opts = prepare.parse(
        prepare.Options, [str(corpus[0]), "--out", str(tmp_path), "--workers", "1", *SETTINGS]
    )
    calls, dead = [], []

    def dies_at_the_third(path, tokens):
        calls.append(path.name)
        if len(calls) == 3 and not dead:
            dead.append(path.name)
            raise KeyboardInterrupt
        return write_shard(path, tokens)

    monkeypatch.setattr(prepare, "write_shard", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(opts)
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == sorted(calls[:2])
    calls.clear()
    prepare.prepare(opts)  # resumes: the two shards already written are not written again
    assert calls[0] == "mini_train_000002.bin"
    for f in prepared.glob("*.bin"):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes()
    prepare.prepare(opts)  # finished: nothing to do
    assert (
        calls[-1] != "mini_val_000000.bin" and len(calls) == len(list(prepared.glob("*.bin"))) - 2
    )


def test_malformed_shards_are_one_line_errors(tmp_path):
    good = write_shard(tmp_path / "x_train_000001.bin", np.arange(10))
    raw = good.read_bytes()
    cases = {"magic": b"\x00" * 4 + raw[4:], "short": raw[:100], "truncated": raw[:-2]}
    needles = {"magic": "magic 0", "short": "only 100 bytes", "truncated": "header says 10"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"{name}: .*{needles[name]}"):
            read_shard(tmp_path / name)


def test_windows_never_cross_a_shard(tmp_path):
    shards = [np.arange(0, 50, dtype=np.uint16), np.arange(1000, 1017, dtype=np.uint16)]
    w = ShardWindows(shards, T=8)
    assert len(w) == 6 + 2
    b = w.batch(np.arange(len(w)))
    for row, target in zip(b["inputs"], b["targets"], strict=True):
        np.testing.assert_array_equal(np.diff(np.append(row, target[-1])), 1)


def test_pretrain_on_our_shards_and_an_llmc_shard(prepared, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for f in prepared.glob("*.bin"):
        (data / f.name).write_bytes(f.read_bytes())
    # A shard as llm.c's fineweb.py writes it, byte by byte, read along with ours.
    tokens = np.random.default_rng(0).integers(0, 50257, 400).astype(np.uint16)
    header = np.zeros(256, np.int32)
    header[:3] = 20240520, 1, len(tokens)
    (data / "edufineweb_train_000009.bin").write_bytes(header.tobytes() + tokens.tobytes())
    train, val = shard_windows(data, 16)
    assert len(val) == 299 // 16 and len(train) == len(ShardWindows(train.shards[:-1], 16)) + 24
    np.testing.assert_array_equal(
        train.batch(np.array([len(train) - 24]))["inputs"][0], tokens[:16]
    )
    pretrain.main(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "nano",
            "--context-length",
            "16",
            "--batch-size",
            "2",
            "--max-steps",
            "2",
            "--eval-every",
            "2",
            "--eval-batches",
            "1",
            "--sample-tokens",
            "2",
            "--no-progress",
            "--b2",
            "0.95",
            "--min-lr",
            "1e-5",
        ]
    )
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["step"] == 2 and np.isfinite(last["val_loss"])
