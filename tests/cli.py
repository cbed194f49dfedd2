"""Command lines run in the test's own process, as their console script runs them: `main(argv)`
under `run_cli`, which turns a user error into one line on stderr and exit code 2.

A process costs seconds (importing JAX, compiling again what this process has compiled); only
tests of what a process itself does (signals, SIGKILL, locks between processes, several
processes, the console script) start one (`module_cmd`).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from typing import NamedTuple

from gptjax.options import run_cli


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The one `error:` line a user error prints (a progress bar may come before it)."""
        lines = self.stderr.replace("\r", "\n").splitlines()  # a bar's \r ends its line too
        lines = [line for line in lines if line.startswith("error: ")]
        assert len(lines) == 1, self.stderr
        return lines[0]


def run(module: str, *argv, stdin: str = "") -> Result:
    """`python -m module argv...` in this process: (exit code, stdout, stderr). An exception
    that run_cli lets through (a bug, not a user error) fails the test with its traceback."""
    main = importlib.import_module(module).main
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        _stdin(stdin),
    ):
        try:
            run_cli(lambda: main([str(a) for a in argv]))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return Result(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stdin(text: str):
    saved, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def module_cmd(module: str, *argv) -> list[str]:
    """The command line of `python -m module argv...` in a process of its own."""
    return [sys.executable, "-m", module, *map(str, argv)]
