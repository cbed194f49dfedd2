"""Benchmarks: scripts that print figures (tokens/s, memory, latency); not library modules.

`gptjax bench [OPTIONS]` is `python -m train.bench.speed`; `gptjax bench recipe [OPTIONS]` is
`python -m train.bench.recipe`.
"""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    """`gptjax bench`: the speed bench, or the recipe bench when argv starts with `recipe`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["recipe"]:
        from train.bench import recipe

        sys.argv[0] += " recipe"
        return recipe.main(argv[1:])
    from train.bench import speed

    return speed.main(argv)
