"""A tokenizer of your own (gptjax.data.bpe) and ChatML (gptjax.data.chat): what gptjax encodes,
transformers encodes the same way from the same folder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from gptjax.data import IGNORE, bpe, chat, instruct
from gptjax.data.cache import fetch

transformers = pytest.importorskip("transformers")

SPECIAL = "a<|endoftext|>b <|im_start|>user\nhi<|im_end|>\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A 400-token BPE trained on The Verdict, with the chat tokens, saved with a template."""
    text = fetch("the-verdict.txt").read_text()
    enc = chat.chat_encoding(bpe.train([text], 400))
    return bpe.save(enc, tmp_path_factory.mktemp("tok") / "tok", chat_template=chat.JINJA)


def samples(n=120, seed=0) -> list[str]:
    """Texts over every kind of character: ASCII, accents, CJK, emoji, controls, spaces."""
    rng = random.Random(seed)
    pools = [(32, 127), (0xC0, 0x250), (0x4E00, 0x4F00), (0x1F600, 0x1F650), (0, 32)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randrange(1, 40)):
            lo, hi = rng.choice(pools)
            chars.append(chr(rng.randrange(lo, hi)))
        out.append("".join(chars))
    return [*out, "", " ", "\n\n\n", "  leading and trailing  ", "it's 1234 o'clock!!"]


def test_round_trips_any_text_and_loads_the_same_in_transformers(folder):
    enc = bpe.load(folder)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert enc.n_vocab == len(hf) == 402  # 399 bytes and merges, <|endoftext|>, 2 chat tokens
    assert enc.eot_token == 399 and hf.convert_tokens_to_ids("<|endoftext|>") == 399
    text = fetch("the-verdict.txt").read_text()
    for s in [*samples(), text[:3000], SPECIAL]:
        ids = enc.encode(s, allowed_special="all")
        assert enc.decode(ids) == s
        assert hf(s, add_special_tokens=False)["input_ids"] == ids, s
        assert hf.decode(ids) == s
    raw = bytes(range(256)) * 2  # arbitrary bytes, also not UTF-8: one token per piece or more
    assert enc.decode_bytes(enc.encode_ordinary(raw.decode("latin-1")))  # encodes everything
    assert all(enc.decode_single_token_bytes(i) for i in range(enc.eot_token))


def test_more_merges_compress_held_out_text_more():
    text = fetch("the-verdict.txt").read_text()
    held = text[15000:]
    small, large = (bpe.train([text[:15000]], n) for n in (300, 1000))
    assert 1.0 < bpe.bytes_per_token(small, held) < bpe.bytes_per_token(large, held)
    assert bpe.token_bytes(large, 1002)[[0, 998, 999, 1001]].tolist()[1:] == [
        len(large.decode_single_token_bytes(998)),
        0,
        0,
    ]


def test_chatml_ids_equal_transformers_apply_chat_template(folder):
    enc = bpe.load(folder)
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": " 4, of course.\n"},
        {"role": "user", "content": "And <|endoftext|>?"},
        {"role": "assistant", "content": "\n\nNo idea."},
    ]
    for turns, prompt in ((messages, False), (messages[:2], True)):
        theirs = hf.apply_chat_template(turns, tokenize=True, add_generation_prompt=prompt)
        theirs = theirs["input_ids"] if hasattr(theirs, "keys") else theirs
        assert chat.encode(enc, turns, add_generation_prompt=prompt) == list(theirs)


def test_the_loss_falls_on_assistant_turns_only(folder):
    enc = bpe.load(folder)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao"},
    ]
    ids, mask = chat.encode_with_mask(enc, messages)
    assert ids == chat.encode(enc, messages)
    batch = instruct.collate([ids], masks=[mask], pad_id=enc.eot_token)
    targets = batch["targets"][0]
    learned = [int(t) for t in targets if t != IGNORE]
    assert enc.decode(learned) == "Hello<|im_end|>Ciao<|im_end|>"
    # Each learned target is the next input token: the model predicts the reply from its header.
    shown = np.flatnonzero(targets != IGNORE)
    assert enc.decode(batch["inputs"][0, shown[:1]].tolist()) == "\n"


def test_a_damaged_tokenizer_folder_is_one_line(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (bpe.META, bpe.RANKS):
        (broken / name).write_bytes((folder / name).read_bytes())
    (broken / bpe.RANKS).write_text("not base64 at all\n")
    with pytest.raises(ValueError, match="not a readable tokenizer"):
        bpe.load(broken)
    with pytest.raises(FileNotFoundError, match="missing"):
        bpe.load(tmp_path)
    with pytest.raises(ValueError, match="vocab-size"):
        bpe.train(["abc"], 100)
