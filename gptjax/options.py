"""The one config mechanism: a script's run options are a frozen dataclass, and every field is a
command-line flag (`max_new_tokens` -> `--max-new-tokens`), typed from its annotation and
documented by its `help` metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help: str, **kw) -> Any:
    """A dataclass field with its command-line help."""
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def argument(help: str, nargs: str | None = None) -> Any:
    """A positional command-line argument: required, or with nargs="*" a list (maybe empty)."""
    if nargs:
        return dataclasses.field(
            default_factory=list, metadata={"help": help, "positional": True, "nargs": nargs}
        )
    return dataclasses.field(metadata={"help": help, "positional": True})


def _scalar_type(annotation) -> type:
    """int for `int | None`; float for `float`."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner
    return annotation


def parser_for(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    return add_fields(parser, cls)


def add_fields(parser: argparse.ArgumentParser, cls: type) -> argparse.ArgumentParser:
    """One argument per field of dataclass `cls`: positionals first, then --flags."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _scalar_type(hints[f.name])
        if f.metadata.get("positional"):
            nargs = f.metadata.get("nargs")
            parser.add_argument(f.name, type=str if nargs else kind, help=f.metadata["help"],
                                metavar=f.name.upper(), nargs=nargs)  # fmt: skip
            continue
        flag = "--" + f.name.replace("_", "-")
        kw = dict(default=f.default, help=f.metadata.get("help", ""), dest=f.name)
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=kind, metavar=kind.__name__.upper(), **kw)
    return parser


def parse(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Build `cls` from command-line flags (argv defaults to sys.argv[1:])."""
    args = parser_for(cls, description).parse_args(argv)
    return cls(**vars(args))


def parse_command(commands: dict[str, tuple[type, str]], argv=None, description=None):
    """Subcommands, each with its own options dataclass: returns (name, options)."""
    parser = argparse.ArgumentParser(description=description)
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (cls, help_text) in commands.items():
        sub = subs.add_parser(name, help=help_text, description=help_text,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
        add_fields(sub, cls)
    args = vars(parser.parse_args(argv))
    name = args.pop("command")
    return name, commands[name][0](**args)


def run_cli(main: Callable[[], Any]) -> None:
    """Run a CLI entry point: user errors print one line to stderr and exit 2 (GPTJAX_DEBUG=1 shows
    the traceback)."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, OSError) as e:
        if os.environ.get("GPTJAX_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
