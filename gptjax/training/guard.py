"""What keeps a run safe from its surroundings: one run per directory, and a clean stop on
SIGTERM (cloud preemption) or SIGINT (Ctrl-C) at a step boundary."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

LOCK = ".lock"


class RunLock:
    """OUT/.lock, held for the life of a run: `{"host", "pid", "since"}` written by process 0.

    A second run on the same directory is refused with one line naming the holder; a lock left
    by a process that is no longer running on this host is taken over, saying so.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self.held = False

    def __enter__(self) -> RunLock:
        if jax.process_index() != 0:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.ctime()}
        while not self._create(me):
            holder = self._holder()
            if holder is None:
                continue  # released or unreadable between our two looks: try again
            if holder["host"] != me["host"] or _alive(holder["pid"]):
                raise ValueError(
                    f"{self.path.parent} is in use by pid {holder['pid']} on "
                    f"{holder['host']} (since {holder.get('since', '?')}); wait for "
                    "it to finish or choose another --out"
                )
            print(
                f"taking over {self.path}: pid {holder['pid']} on this host is no longer running",
                file=sys.stderr,
            )
            self.path.unlink(missing_ok=True)
        self.held = True
        return self

    def _create(self, me: dict) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        return True

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return {"host": str(holder["host"]), "pid": int(holder["pid"]), **holder}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # a torn or foreign file: treat as stale
            return {"host": socket.gethostname(), "pid": -1}

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class StopSignals:
    """Catch SIGTERM and SIGINT while the loop runs: the first asks the loop to stop after the
    step in flight (it then checkpoints and exits 128 + signal); a second stops at once. Orbax
    renames a checkpoint into place only when complete, so even then the last complete step
    restores."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self.previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may handle signals (e.g. a loop run from a test)
        for s in self.SIGNALS:
            self.previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            print(f"\nsecond {signal.Signals(signum).name}: stopping now", file=sys.stderr)
            raise SystemExit(128 + signum)
        self.signum = signum

    def requested(self) -> int | None:
        """The signal to stop for, agreed by all processes (any one's signal stops them all,
        at the same step, so their checkpoint shards belong together)."""
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        got = multihost_utils.process_allgather(np.int32(self.signum or 0))
        return int(np.max(got)) or None

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
