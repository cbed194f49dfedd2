"""crc32c checksums of every array in a pytree, recorded when saved and verified when restored.

Orbax and tensorstore write array bytes without a checksum, so one flipped bit on disk would be
restored silently. Each saved tree gets `{"params/h_0/attn/c_attn/kernel": "1a2b3c4d", ...}`
beside it; a restored tree whose bytes differ names the first array that does.
"""

from __future__ import annotations

import google_crc32c
import jax
import numpy as np

CHUNK = 1 << 26  # bytes hashed at a time: bounded extra memory for any array size


class ChecksumError(ValueError):
    """A restored array whose bytes differ from those saved."""


def _host_bytes(leaf) -> np.ndarray | None:
    """The leaf's data on this host; None for an array sharded over other processes (its
    shards are checked by the processes that hold them, not here)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        if not leaf.is_fully_replicated:
            return None
        leaf = leaf.addressable_shards[0].data
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(np.asarray(leaf)).reshape(-1).view(np.uint8)


def crc32c(data: np.ndarray) -> str:
    crc = 0
    for start in range(0, data.size, CHUNK):
        crc = google_crc32c.extend(crc, data[start : start + CHUNK].tobytes())
    return f"{crc:08x}"


def checksums(tree, prefix: str) -> dict[str, str]:
    """{"prefix/path/of/leaf": crc32c hex} for every array leaf of `tree`."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        data = _host_bytes(leaf)
        if data is not None:
            out[f"{prefix}/{jax.tree_util.keystr(path, simple=True, separator='/')}"] = crc32c(data)
    return out


def verify(tree, prefix: str, expected: dict[str, str], where: str) -> None:
    """Raise ChecksumError naming `where` and the array when `tree` differs from `expected`
    (arrays `expected` does not list, e.g. from before checksums were kept, pass)."""
    for name, crc in checksums(tree, prefix).items():
        saved = expected.get(name)
        if saved is not None and saved != crc:
            raise ChecksumError(
                f"{where}: array {name} does not match its checksum "
                f"(saved crc32c {saved}, read {crc}): damaged"
            )
