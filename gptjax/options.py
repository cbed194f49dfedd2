"""The one config mechanism: a script's run options are a frozen dataclass whose fields document
themselves (a docstring under each field). tyro turns the fields into flags (`max_new_tokens` ->
`--max-new-tokens`, `--flag/--no-flag` for booleans, choices from `Literal`), and `--config FILE`
(TOML or YAML) sets any of them first: flags on the command line override the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from gptjax.errors import first_line

T = TypeVar("T")

CONFIG_HELP = "Options may also come from --config FILE (TOML or YAML); flags override the file."


def parse(cls: type[T], argv: Sequence[str] | None = None, doc: str | None = None) -> T:
    """Build `cls` from `--config FILE` and command-line flags (argv defaults to sys.argv[1:]);
    the first paragraph of `doc` describes the command in `--help`. A bad flag is one line on
    stderr and SystemExit(2)."""
    import tyro  # only where options are parsed: `import gptjax` stays light

    argv = list(sys.argv[1:] if argv is None else argv)
    path, argv = _pop_config(argv)
    default = from_file(cls, path) if path else None
    about = (doc or cls.__doc__ or "").split("\n\n")[0].strip()
    description = f"{about}\n\n{CONFIG_HELP}" if about else CONFIG_HELP
    kw = {"default": default} if default is not None else {}
    try:
        with _one_line_errors():
            return tyro.cli(cls, args=argv, prog=_prog(), description=description, **kw)
    except CommandLineError as e:
        print(f"error: {e} (see --help)", file=sys.stderr)
        raise SystemExit(2) from None


class CommandLineError(Exception):
    """The command line was refused; the message says why in one line."""


def _one_line_errors():
    """tyro's parse-error hook, turning each refusal into a CommandLineError of one line instead
    of tyro's drawn box. The hook is tyro's private API (`tyro._errors`), so pyproject pins tyro
    to the minor version it was written against and tests/test_options.py checks every kind of
    refusal; a kind it does not know still gives one line."""
    from tyro import _errors

    def refuse(event) -> None:
        raise CommandLineError(_say(event, _errors))

    return _errors.on_parse_error(refuse)


def _say(event, kinds) -> str:
    """A tyro parse-error event in words."""
    flag = lambda arg: "/".join(arg.lowered.name_or_flags) or str(arg.lowered.metavar)
    if isinstance(event, kinds.InstantiationFailure):
        return (f"{flag(event.argument)}: " if event.argument else "") + event.message
    if isinstance(event, kinds.InvalidChoice):
        choices = ", ".join(event.choices)
        return f"invalid choice '{event.value}' for '{flag(event.argument)}' ({choices})"
    if isinstance(event, kinds.UnrecognizedArgs):
        return f"unrecognized options: {' '.join(event.tokens)}"
    if isinstance(event, kinds.BadValue):
        got = event.offending_value
        return f"{flag(event.argument)}: " + (f"unexpected {got!r}" if got else "expected a value")
    if isinstance(event, kinds.MissingArgs):
        return "required: " + ", ".join(flag(a.arg) for a in event.missing_arguments)
    return "invalid options (" + re.sub(r"(?<!^)(?=[A-Z])", " ", type(event).__name__).lower() + ")"


def _prog() -> str:
    """How the command was called: `python -m train.pretrain`, not the path of its file."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if not sys.argv[0].endswith(".py"):
        return sys.argv[0]  # a console script, or `gptjax SUB` as `dispatch` set it
    return f"python -m {spec.name.removesuffix('.__main__')}" if spec else Path(sys.argv[0]).name


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --config path or None, argv without it)."""
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 == len(argv):
                raise ValueError("--config: expected a file after it")
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def choice_or_flag(choices: tuple[str, ...], alone: str) -> Any:
    """The type of an option that takes one of `choices` or none: `--resume never`, and
    `--resume` alone meaning `alone` (how a boolean flag grows into a choice without breaking
    the commands that used it)."""
    from tyro.constructors import PrimitiveConstructorSpec

    def instance(args: list[str]) -> str:
        if args and args[0] not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {args[0]!r}")
        return args[0] if args else alone

    spec = PrimitiveConstructorSpec(
        nargs=(0, 1),
        metavar="{" + ",".join(choices) + "}",
        instance_from_str=instance,
        is_instance=lambda value: value in choices,
        str_from_instance=lambda value: [value],
        choices=choices,
    )
    return Annotated[Literal[choices], spec]


def read_file(path: str | Path) -> dict:
    """A TOML (.toml) or YAML (.yaml, .yml) file of options as a flat dict."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from None
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({first_line(e)})") from None
    else:
        raise ValueError(f"--config {path}: expected a .toml, .yaml or .yml file")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected key: value pairs at the top level")
    return data


def from_file(cls: type[T], path: str | Path) -> T:
    """An instance of `cls` with the file's values over the defaults; fields neither has stay
    required (tyro asks for them on the command line)."""
    import tyro

    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in read_file(path).items():
        name = str(key).replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"{path}: unknown option '{key}'{hint}")
        values[name] = check_value(hints[name], value, f"{path}: '{key}'")
    for name, f in fields.items():
        if name not in values:
            if f.default is not dataclasses.MISSING:
                values[name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[name] = f.default_factory()
            else:
                values[name] = tyro.MISSING
    return cls(**values)


def check_value(annotation, value: Any, where: str) -> Any:
    """`value` as `annotation` wants it (an int is a fine float), or a one-line error."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return check_value(args[0], value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(arg, value, where)
            except ValueError:
                pass
        raise ValueError(f"{where} must be {_describe(annotation)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):  # a tuple[T, ...] option is a list in the file
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        items = [check_value(args[0] if args else Any, v, where) for v in value]
        return items if origin is list else tuple(items)
    if annotation is Any:
        return value
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(annotation)
    if ok is None:
        raise ValueError(f"{where}: options of type {annotation} cannot come from a file")
    if not ok:
        raise ValueError(f"{where} must be {_describe(annotation)}, got {value!r}")
    return float(value) if annotation is float else value


def _describe(annotation) -> str:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    return {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }.get(annotation, str(annotation))


class Command(typing.NamedTuple):
    """A subcommand: its one-line help and a function of argv, or `module:function` (imported
    only when run, so `--help` of the whole command stays fast)."""

    help: str
    target: str | Callable[[list[str]], Any]

    def run(self, argv: list[str]) -> Any:
        if callable(self.target):
            return self.target(argv)
        module, function = self.target.split(":")
        import importlib

        return getattr(importlib.import_module(module), function)(argv)


def dispatch(commands: dict[str, Command], argv: Sequence[str] | None, doc: str, prog=None):
    """Run the subcommand argv[0] names with the rest of argv; `--help` lists them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or _prog()
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, commands)) + 2
        lines = [
            f"usage: {prog} COMMAND [--help] [OPTIONS]",
            "",
            doc.split("\n\n")[0],
            "",
            "commands:",
        ] + [f"  {n:<{width}}{c.help}" for n, c in commands.items()]
        print("\n".join(lines))
        return None if argv else sys.exit(2)
    name, rest = argv[0], argv[1:]
    if name not in commands:
        close = difflib.get_close_matches(name, commands, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{prog}: unknown command '{name}'{hint}; {prog} --help lists them")
    sys.argv[0] = f"{prog} {name}"  # the usage line of the subcommand's --help
    return commands[name].run(rest)


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
