"""Benchmarks: scripts that print figures (tokens/s, memory, latency); not library modules.

`gptjax bench --list` names every bench (`suite.BENCHES`) with one line each; `gptjax bench NAME
[OPTIONS]` runs one (`python -m train.bench.NAME`, dashes as underscores); `gptjax bench
[OPTIONS]` is the speed bench. Each bench's --help and docstring say what it prints.
"""

from __future__ import annotations

import importlib
import sys

from train.bench.suite import BENCHES, module


def main(argv=None) -> None:
    """`gptjax bench`: the bench `argv` names first (`--list`: all of them), else the speed
    bench with all of argv."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--list"]:
        return print("\n".join(f"{name:<15} {about}" for name, about in BENCHES.items()))
    name = "speed" if not argv or argv[0].startswith("-") else argv.pop(0)
    if name not in BENCHES:
        raise ValueError(f"unknown bench {name!r}; expected one of: {', '.join(BENCHES)}")
    sys.argv[0] += f" {name}" if name != "speed" else ""
    return importlib.import_module(module(name)).main(argv)
