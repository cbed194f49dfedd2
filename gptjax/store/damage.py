"""Telling a damaged checkpoint from one that could not be read for another reason.

A checkpoint whose files are truncated, garbled or missing is damage: the run sets it aside and
restores an older one. Anything else (out of memory, a device layout that does not fit, an I/O
error that would pass on retry) says nothing about the files, so the run stops with one line and
leaves every checkpoint where it is: setting good checkpoints aside one after another would lose
the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Iterator

from gptjax.errors import first_line
from gptjax.store.checksum import ChecksumError

# tensorstore's words for files that are cut short, garbled or gone; any other status
# (UNAVAILABLE, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ...) is about the machine, not the files.
DAMAGE_STATUSES = ("DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND")


class CheckpointReadError(ValueError):
    """A checkpoint that could not be restored for a reason other than damage to its files."""


def damage(error: BaseException) -> str | None:
    """What in `error` (raised restoring a checkpoint) shows its files are damaged: truncated,
    undecodable or missing; None when nothing does."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if isinstance(error, json.JSONDecodeError | UnicodeDecodeError | FileNotFoundError):
            return first_line(error)
        if isinstance(error, ValueError) and text.split(":")[0] in DAMAGE_STATUSES:
            return first_line(error)
        if isinstance(error, KeyError) and "was not found in the checkpoint" in text:
            return first_line(error)
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def reading(where: str) -> Iterator[None]:
    """Reading a checkpoint: damage to its files becomes ChecksumError, any other failure
    CheckpointReadError, each one line naming `where`."""
    quiet_abandoned_reads()
    try:
        yield
    except ChecksumError:
        raise
    except Exception as e:
        _after_failed_read()
        if (what := damage(e)) is not None:
            raise ChecksumError(f"{where}: unreadable ({what})") from None
        raise CheckpointReadError(
            f"{where} could not be restored ({first_line(e)}); it is left as it is (not "
            "damaged as far as can be told): fix the cause and run the same command again"
        ) from None


def quiet_abandoned_reads() -> None:
    """When a restore fails, orbax abandons the reads still in flight; each ends later in an
    event loop orbax has closed, and Python prints a traceback for it: through sys.unraisablehook
    ('Event loop is closed', or the read's error again from its coroutine), through the asyncio
    logger ('... exception was never retrieved') and as a 'coroutine ... was never awaited'
    warning. The failure itself is reported in one line, so these are dropped: the first kind
    always (it names orbax or the closed loop), the other two once a restore has failed."""
    previous = sys.unraisablehook
    if getattr(previous, "gptjax_quiet", False):
        return

    def hook(unraisable) -> None:
        exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        closed = isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
        if not (closed or (code is not None and "orbax" in code.co_filename)):
            previous(unraisable)

    hook.gptjax_quiet = True
    sys.unraisablehook = hook


def _after_failed_read() -> None:
    logging.getLogger("asyncio").addFilter(lambda r: "never retrieved" not in str(r.msg))
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
