"""The one cache folder for everything gptjax downloads.

`GPTJAX_CACHE` (default `~/.cache/gptjax`) is laid out like this, each file fetched from its
canonical URL on first use and checked against its sha256:

    the-verdict.txt
    instruction-data.json, instruction-data-with-preference.json
    sms-spam/SMSSpamCollection
    hellaswag_val.jsonl (HellaSwag's validation set, 10,042 examples)
    gpt2-bpe/encoder.json, gpt2-bpe/vocab.bpe
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gptjax.data.download import DownloadError, check_file, download
from gptjax.files import atomic_file


@dataclass(frozen=True)
class Remote:
    url: str
    sha256: str
    member: str | None = None  # the file inside a zip archive at `url`


_BOOK = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
_BPE = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
FILES: dict[str, Remote] = {
    "the-verdict.txt": Remote(
        f"{_BOOK}/ch02/01_main-chapter-code/the-verdict.txt",
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
    ),
    "instruction-data.json": Remote(
        f"{_BOOK}/ch07/01_main-chapter-code/instruction-data.json",
        "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    ),
    "instruction-data-with-preference.json": Remote(
        f"{_BOOK}/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
        "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
    ),
    "sms-spam/SMSSpamCollection": Remote(
        "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        member="SMSSpamCollection",
    ),
    "hellaswag_val.jsonl": Remote(
        "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
        "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588",
    ),
    "gpt2-bpe/encoder.json": Remote(
        f"{_BPE}/encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    ),
    "gpt2-bpe/vocab.bpe": Remote(
        f"{_BPE}/vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    ),
}


def cache_dir() -> Path:
    """The cache folder: $GPTJAX_CACHE, or ~/.cache/gptjax."""
    return Path(os.environ.get("GPTJAX_CACHE") or Path.home() / ".cache" / "gptjax")


def fetch(name: str, *, progress: bool = True) -> Path:
    """Path to cached file `name` (a key of FILES), downloading and verifying it if missing."""
    if name not in FILES:
        raise ValueError(f"unknown cached file {name!r}; expected one of: {', '.join(FILES)}")
    remote = FILES[name]
    path = cache_dir() / name
    if not path.exists():
        if remote.member is None:
            download(remote.url, path, sha256=remote.sha256, progress=progress)
        else:
            _download_member(remote, path, progress)
    try:
        check_file(path, sha256=remote.sha256)
    except DownloadError as e:
        raise DownloadError(f"cached file {e}; delete it to download it again") from None
    return path


def _download_member(remote: Remote, path: Path, progress: bool) -> None:
    archive = download(remote.url, path.parent / Path(remote.url).name, progress=progress)
    with atomic_file(path) as tmp:  # a member that fails its check is removed, not kept
        with zipfile.ZipFile(archive) as zf, open(tmp, "wb") as out:
            out.write(zf.read(remote.member))
        check_file(tmp, sha256=remote.sha256)
