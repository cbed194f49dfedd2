import hashlib
import os

import pytest

from gptjax.data import cache
from gptjax.data.download import DownloadError, download
from tests.conftest import SHARED
from tests.http_fixture import FileServer

DATA = os.urandom(3 * (1 << 20) + 123)  # a few chunks, so a drop lands mid-file
SHA = hashlib.sha256(DATA).hexdigest()


def test_download_verifies_and_renames(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        path = download(
            server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA, size=len(DATA), progress=False
        )
    assert path.read_bytes() == DATA
    assert not (tmp_path / "f.bin.part").exists()


def test_dropped_connection_resumes_with_range(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        server.drop_after["/f.bin"] = 1 << 20
        download(server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA, progress=False)
        ranges = [r for _, r in server.requests]
    assert (tmp_path / "f.bin").read_bytes() == DATA
    assert ranges[0] is None and ranges[1] == f"bytes={1 << 20}-"


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA[:1000])
    with FileServer({"/f.bin": DATA}) as server:
        download(server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA, progress=False)
        assert server.requests == [("/f.bin", "bytes=1000-")]
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_wrong_hash_names_the_file_and_leaves_nothing(tmp_path):
    with FileServer({"/f.bin": DATA}) as server, pytest.raises(DownloadError, match="f.bin"):
        download(server.url("/f.bin"), tmp_path / "f.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_falls_back_to_a_mirror(tmp_path):
    with FileServer({"/mirror/f.bin": DATA}) as server:
        urls = [server.url("/missing/f.bin"), server.url("/mirror/f.bin")]
        download(urls, tmp_path / "f.bin", sha256=SHA, progress=False, retries=1)
    assert (tmp_path / "f.bin").read_bytes() == DATA


def test_unreachable_is_a_clear_error(tmp_path):
    with FileServer({}) as server, pytest.raises(DownloadError, match="could not download f.bin"):
        download(server.url("/f.bin"), tmp_path / "f.bin", progress=False, retries=1)


def test_cache_downloads_missing_files_from_their_url(tmp_path, monkeypatch):
    text = (cache.cache_dir() / "the-verdict.txt").read_bytes()
    with FileServer({"/verdict.txt": text}) as server:
        remote = cache.Remote(server.url("/verdict.txt"), cache.FILES["the-verdict.txt"].sha256)
        monkeypatch.setitem(cache.FILES, "the-verdict.txt", remote)
        monkeypatch.setenv("GPTJAX_CACHE", str(tmp_path))
        assert cache.fetch("the-verdict.txt", progress=False).read_bytes() == text
        assert len(server.requests) == 1
        cache.fetch("the-verdict.txt", progress=False)  # cached now: no second request
        assert len(server.requests) == 1


def test_cache_rejects_a_corrupted_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTJAX_CACHE", str(tmp_path))
    (tmp_path / "the-verdict.txt").write_text("not the verdict")
    with pytest.raises(DownloadError, match="the-verdict.txt.*sha256"):
        cache.fetch("the-verdict.txt")


NOT_SHARED = {"hellaswag_val.jsonl"}  # downloaded on a user's machine; no offline copy here


def test_cache_has_every_shared_file():
    for name in set(cache.FILES) - NOT_SHARED:
        assert cache.fetch(name, progress=False).is_file()
    assert not NOT_SHARED & {p.name for p in SHARED.rglob("*")}, "shared now: test it above"


def test_cache_extracts_a_file_from_its_zip(tmp_path, monkeypatch):
    import io
    import zipfile

    sms = (cache.cache_dir() / "sms-spam" / "SMSSpamCollection").read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme", "UCI SMS Spam Collection")
        zf.writestr("SMSSpamCollection", sms)
    with FileServer({"/sms.zip": buf.getvalue()}) as server:
        old = cache.FILES["sms-spam/SMSSpamCollection"]
        remote = cache.Remote(server.url("/sms.zip"), old.sha256, member=old.member)
        monkeypatch.setitem(cache.FILES, "sms-spam/SMSSpamCollection", remote)
        monkeypatch.setenv("GPTJAX_CACHE", str(tmp_path))
        path = cache.fetch("sms-spam/SMSSpamCollection", progress=False)
    assert path.read_bytes() == sms
    assert not list(path.parent.glob("*.part"))
