"""The lengths batches are padded to. A jitted program compiles once per shape, so rows (and the
number of rows, where it varies) are padded up to a power of two: a handful of programs serve
every mix of lengths, and nothing is padded to more than twice its size. Pads are masked or
ignored wherever they are used, so they change no result."""

# The shortest padded row of tokens: short rows (prompts, lm-eval requests, HellaSwag endings)
# all share the one program of this length.
LEAST = 32


def padded_length(n: int, limit: int | None = None, *, least: int = 1) -> int:
    """The smallest power of two >= n and >= `least`, capped at `limit`."""
    size = max(least, 1 << max(n - 1, 0).bit_length())
    return size if limit is None else min(size, limit)
