import hashlib
import shutil

import pytest
import tiktoken

from gptjax.data import tokenizer
from gptjax.data.cache import FILES, cache_dir

TEXT = "Hello, world! Every effort moves you.  Ünïcödé 🙂 <|endoftext|> 12345 don't\n\ttabs"


@pytest.fixture(scope="module")
def tiktoken_gpt2(tmp_path_factory, monkeypatch_module=None):
    """tiktoken's own "gpt2" encoding, with its download cache seeded from our cache."""
    tk_cache = tmp_path_factory.mktemp("tiktoken")
    for name in ("gpt2-bpe/encoder.json", "gpt2-bpe/vocab.bpe"):
        key = hashlib.sha1(FILES[name].url.encode()).hexdigest()
        shutil.copy(cache_dir() / name, tk_cache / key)
    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(tk_cache))
    try:
        yield tiktoken.get_encoding("gpt2")
    finally:
        mp.undo()


def test_gpt2_identical_to_tiktoken(tiktoken_gpt2):
    ours = tokenizer.gpt2()
    assert ours._mergeable_ranks == tiktoken_gpt2._mergeable_ranks
    assert ours._special_tokens == tiktoken_gpt2._special_tokens
    assert ours._pat_str == tiktoken_gpt2._pat_str
    assert ours.n_vocab == 50257
    allowed = {"<|endoftext|>"}
    ids = ours.encode(TEXT, allowed_special=allowed)
    assert ids == tiktoken_gpt2.encode(TEXT, allowed_special=allowed)
    assert 50256 in ids
    assert ours.decode(ids) == TEXT


def test_endoftext_only_on_request():
    enc = tokenizer.gpt2()
    with pytest.raises(ValueError):
        enc.encode("a <|endoftext|>")
    assert enc.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]


def test_gpt2_from_model_folder(tmp_path):
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(cache_dir() / "gpt2-bpe" / name, tmp_path / name)
    assert tokenizer.gpt2(tmp_path).encode(TEXT, disallowed_special=()) == tokenizer.gpt2().encode(
        TEXT, disallowed_special=()
    )
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="vocab.bpe"):
        tokenizer.gpt2(tmp_path)
    (tmp_path / "encoder.json").unlink()
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        tokenizer.gpt2(tmp_path)


def test_simple_tokenizer_round_trip():
    text = (cache_dir() / "the-verdict.txt").read_text()
    tok = tokenizer.SimpleTokenizer.from_text(text)
    assert (
        len(tok.str_to_int) == 1132
    )  # 1,130 words and punctuation + 2 special tokens, as the book
    sample = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    ids = tok.encode(sample)
    assert (
        tok.decode(ids)
        == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    )
    assert tok.encode(tok.decode(ids)) == ids


def test_simple_tokenizer_unknown_words():
    tok = tokenizer.SimpleTokenizer.from_text("the cat sat.")
    joined = " <|endoftext|> ".join(["Hello, cat", "the palace."])
    ids = tok.encode(joined)
    unk, eot = tok.str_to_int["<|unk|>"], tok.str_to_int["<|endoftext|>"]
    assert ids.count(unk) == 3 and eot in ids
    assert tok.decode(ids) == "<|unk|> <|unk|> cat <|endoftext|> the <|unk|>."  # "," is unknown too
