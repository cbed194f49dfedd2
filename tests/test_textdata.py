"""Labelled texts: the book's SMS spam splits exactly, own files and folders, bad files."""

import hashlib
import re

import numpy as np
import pytest

from gptjax.data import textdata, tokenizer


def digest(split):
    text = "\n".join(f"{label}\t{t}" for label, t in zip(split.labels, split.texts, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_sms_spam_is_split_exactly_as_the_book():
    names, splits = textdata.load("sms-spam")
    assert names == ["ham", "spam"]
    assert [len(splits[s].texts) for s in textdata.SPLITS] == [1045, 149, 300]
    assert [int(splits[s].labels.sum()) for s in textdata.SPLITS] == [517, 79, 151]
    # Digests of the splits made by the book's pandas code (read_csv, sample(747,
    # random_state=123), concat, sample(frac=1, random_state=123), cut 0.7 / 0.1).
    got = [digest(splits[s]) for s in textdata.SPLITS]
    assert got == ["e162fed00c6689c3", "696ee4e1fec0e528", "be3a08e1a72e62a8"]
    assert splits["train"].texts[0] == "Dude how do you like the buff wind."


def test_own_tsv_file_csv_file_and_folder(tmp_path):
    rows = [(["b", "a", "c"][i % 3], f"text number {i}") for i in range(50)]
    tsv = tmp_path / "data.tsv"
    tsv.write_text("".join(f"{label}\t{t}\n" for label, t in rows))
    names, splits = textdata.load(str(tsv))
    assert names == ["a", "b", "c"]
    assert [len(splits[s].texts) for s in textdata.SPLITS] == [35, 5, 10]
    seen = sorted(t for s in textdata.SPLITS for t in splits[s].texts)
    assert seen == sorted(t for _, t in rows)

    csv_file = tmp_path / "data.csv"
    csv_file.write_text('Text,Label\n"hello, world",10\nbye,2\nok,2\n')
    names, splits = textdata.load(str(csv_file))
    assert names == ["2", "10"]  # integer labels sort as numbers

    folder = tmp_path / "splits"
    folder.mkdir()
    for split, n in (("train", 6), ("validation", 2), ("test", 3)):
        (folder / f"{split}.csv").write_text(
            "label,text\n" + "".join(f"{['x', 'y'][i % 2]},{split} {i}\n" for i in range(n))
        )
    names, splits = textdata.load(str(folder))
    assert names == ["x", "y"] and splits["test"].texts == ["test 0", "test 1", "test 2"]
    assert splits["train"].labels.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.tsv", None, "no such file or folder"),
        ("cols.csv", b"label,body\nham,hi\n", "line 1: the header has no 'text' column"),
        ("empty.tsv", b"ham\thello\nspam\t   \n", "empty.tsv, line 2: empty text"),
        ("one.tsv", b"ham\thello\nham\tbye\n", "only one class ('ham')"),
        ("bytes.tsv", b"ham\thello\nspam\t\xff\xfe\n", "bytes.tsv, line 2: not UTF-8"),
        ("notab.tsv", b"ham\thi\njust text\n", "notab.tsv, line 2: expected label<TAB>text"),
        ("nothing.tsv", b"", "no examples"),
    ],
    ids=["missing", "column", "empty-text", "one-class", "not-utf8", "no-tab", "empty-file"],
)
def test_bad_files_name_the_file_and_line(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(needle)) as e:
        textdata.load(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_encode_pads_and_cuts_to_one_length():
    enc = tokenizer.gpt2()
    ids = textdata.encode(["Hello world", "a much longer text than the other one"], enc, None)
    assert ids.shape == (2, len(enc.encode("a much longer text than the other one")))
    assert ids[0, 2:].tolist() == [tokenizer.EOT_ID] * (ids.shape[1] - 2)
    short = textdata.encode(["a much longer text than the other one"], enc, 3)
    assert short.tolist() == [enc.encode("a much longer")]
    ex = textdata.Examples(ids, np.array([0, 1], np.int32))
    assert ex.batch(np.array([1]))["inputs"].shape == (1, ids.shape[1])
