import numpy as np
import pytest

from gptjax.data.sliding import batches, sliding_windows, train_val_split


def test_windows_shift_targets_by_one():
    ids = np.arange(20)
    x, y = sliding_windows(ids, max_length=4, stride=4)
    assert x.dtype == y.dtype == np.int32
    np.testing.assert_array_equal(x[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(y, x + 1)
    assert x.shape == (4, 4)  # starts 0, 4, 8, 12; 16 would need token 20


def test_overlapping_stride():
    x, y = sliding_windows(list(range(10)), max_length=4, stride=1)
    assert len(x) == 6
    np.testing.assert_array_equal(x[-1], [5, 6, 7, 8])
    np.testing.assert_array_equal(y[-1], [6, 7, 8, 9])


def test_too_short_is_a_clear_error():
    with pytest.raises(ValueError, match="too short: 4 tokens"):
        sliding_windows([1, 2, 3, 4], max_length=4, stride=1)
    sliding_windows([1, 2, 3, 4, 5], max_length=4, stride=1)  # exactly one window fits


def test_split_by_ratio():
    train, val = train_val_split("abcdefghij", 0.9)
    assert (train, val) == ("abcdefghi", "j")
    with pytest.raises(ValueError, match="train_ratio"):
        train_val_split("abc", 1.0)


def test_batches_are_seeded_and_drop_last():
    x, y = sliding_windows(np.arange(100), max_length=4, stride=4)  # 24 windows
    first = list(batches(x, y, 5, shuffle=True, seed=1, epoch=0))
    again = list(batches(x, y, 5, shuffle=True, seed=1, epoch=0))
    other = list(batches(x, y, 5, shuffle=True, seed=1, epoch=1))
    assert len(first) == 4 and all(b["inputs"].shape == (5, 4) for b in first)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not all(
        np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other, strict=True)
    )
    for b in first:
        np.testing.assert_array_equal(b["targets"], b["inputs"] + 1)
    assert len(list(batches(x, y, 5, drop_last=False))) == 5


def test_a_folder_is_documents_ending_in_eot_and_validation_is_whole_documents(tmp_path):
    from gptjax.data.corpus import Windows, aligned_starts, load_tokens, split_documents
    from gptjax.data.tokenizer import EOT_ID, gpt2

    docs = ["Alpha beta gamma. " * 3, "Delta epsilon. " * 5, "Zeta eta theta iota. " * 4]
    for i, text in enumerate(docs):
        (tmp_path / f"doc{i}.txt").write_text(text)
    tokens = np.asarray(load_tokens(str(tmp_path), progress=False))
    lengths = [len(gpt2().encode_ordinary(d)) for d in docs]
    ends = np.cumsum(np.array(lengths) + 1) - 1
    assert len(tokens) == ends[-1] + 1 and list(np.flatnonzero(tokens == EOT_ID)) == list(ends)
    train, val = split_documents(tokens, 0.6)
    assert train[-1] == EOT_ID and len(train) == ends[1] + 1  # the cut falls after a document
    again = split_documents(np.asarray(load_tokens(str(tmp_path), progress=False)), 0.6)
    np.testing.assert_array_equal(again[1], val)  # the same documents every run
    one = np.arange(100)  # no boundary: cut at the ratio
    assert len(split_documents(one, 0.9)[0]) == 90
    starts = aligned_starts(tokens, 8)
    opens = [0, *ends[:-1]]  # the start, then each document's separator
    assert set(opens) <= set(starts) | {s for s in opens if s + 8 >= len(tokens)}
    assert all(np.diff(starts) <= 8)  # nothing skipped
    assert len(Windows(train, 8, 8, align=True)) == len(aligned_starts(train, 8))


def test_pretraining_prepare_and_the_tokenizer_read_a_source_alike(tmp_path):
    """One reader (`data.documents`): a .jsonl gives pretraining each record's text field, as
    the same texts in a folder of .txt files do, and as prepare and the tokenizer read them;
    bad input is one line naming the file."""
    import json

    from gptjax.data.corpus import load_tokens
    from gptjax.data.documents import documents, source_files
    from train.tokenizer import Options, texts

    docs = ["Alpha beta gamma. " * 3, "Delta epsilon. " * 5, "Zeta eta theta iota. " * 4]
    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs)))
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, text in enumerate(docs):
        (folder / f"doc{i}.txt").write_text(text)
    from_records = load_tokens(str(records), progress=False, text_field="body")
    np.testing.assert_array_equal(from_records, load_tokens(str(folder), progress=False))
    assert list(documents(source_files(str(records)), "body")) == docs  # prepare's reading
    train, held = texts(Options(data=str(records), text_field="body", held_out=1 / 3))
    assert (train, held) == (docs[:2], docs[2:])
    with pytest.raises(ValueError, match=r"docs.jsonl:1: no string field 'text'"):
        load_tokens(str(records), progress=False)
    with pytest.raises(ValueError, match=r"empty: no .txt, .jsonl, .jsonl.gz, .parquet files"):
        (tmp_path / "empty").mkdir()
        load_tokens(str(tmp_path / "empty"), progress=False)
