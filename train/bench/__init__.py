"""Benchmarks: scripts that print figures (tokens/s, memory, latency); not library modules.

`gptjax bench [OPTIONS]` is `python -m train.bench.speed`; `gptjax bench recipe [OPTIONS]` is
`python -m train.bench.recipe`; `gptjax bench cpu-table [OPTIONS]` is
`python -m train.bench.cpu_table`.
"""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    """`gptjax bench`: the speed bench, or the recipe bench (argv starting with `recipe`), or the
    README's CPU table rows (`cpu-table`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["recipe"]:
        from train.bench import recipe

        sys.argv[0] += " recipe"
        return recipe.main(argv[1:])
    if argv[:1] == ["cpu-table"]:
        from train.bench import cpu_table

        sys.argv[0] += " cpu-table"
        return cpu_table.main(argv[1:])
    from train.bench import speed

    return speed.main(argv)
