"""A training script's entry point (`script_main`): the scripts are thin, their tasks and
options live in the library (`gptjax.tasks`)."""

from __future__ import annotations

import dataclasses
import shlex
import sys

from gptjax import heap
from gptjax.options import parse
from gptjax.training import loop, parallel


def script_main(
    options: type, make_task, argv, doc: str, script: str, commands: dict | None = None
) -> None:
    """A training script's entry point: keep the heap (`gptjax.heap.keep`, before the first
    computation), parse its options, join a multi-host run if asked, build its task and run it.
    `script` is the module's name for the run's recorded command (`python -m SCRIPT ...`);
    `commands` ({"predict": fn(argv)}) are its other subcommands, run instead when argv starts
    with one's name."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in (commands or {}):
        return commands[argv[0]](argv[1:])
    heap.keep()  # the run's second log line says whether it applied
    opts = parse(options, argv, doc)
    parallel.init_distributed(opts.coordinator, opts.num_processes, opts.process_id)
    line = shlex.join(["python", "-m", script, *map(str, argv)])
    loop.run(dataclasses.replace(opts.loop_config(), command=line), make_task(opts))
