"""Fetch a file over HTTP(S): resumable, verified, atomic, with a progress bar.

The bytes go to `DEST.part`; an interrupted download resumes from there with an HTTP Range
request, and only a file whose size and sha256 check out is renamed to DEST. No half file ever
carries the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class DownloadError(OSError):
    """A download that could not be completed or verified; the message names the file."""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_file(path: Path, *, sha256: str | None = None, size: int | None = None) -> None:
    """Raise DownloadError naming `path` unless it has the expected size and sha256."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{path}: expected {size} bytes, found {actual}")
    if sha256 is not None and (digest := sha256_of(path)) != sha256:
        raise DownloadError(f"{path}: sha256 is {digest}, expected {sha256}")


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of `url` to `part`, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gptjax"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file already holds the whole thing
            return
        raise
    with response:
        if have and response.status != 206:  # server ignored the Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                disable=not progress,
                desc=part.name.removesuffix(".part"),
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise DownloadError(f"{url}: connection closed after {part.stat().st_size} bytes")


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download the first URL that works (mirrors in order) to `dest`; return its path.

    Each URL is tried `retries` times, resuming the partial file each time. A file that arrives
    complete but fails its size or sha256 check is deleted and the error names it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in [urls] if isinstance(urls, str) else urls:
        for _ in range(retries):
            try:
                _fetch(url, part, timeout, progress)
            except (OSError, http.client.HTTPException) as e:
                errors.append(f"{url}: {e}")
                continue
            try:
                check_file(part, sha256=sha256, size=size)
            except DownloadError as e:
                part.unlink()
                raise DownloadError(f"{dest.name} from {url} failed verification: {e}") from None
            os.replace(part, dest)
            return dest
    raise DownloadError(f"could not download {dest.name}: " + "; ".join(errors[-3:]))
