"""The one options mechanism: recipe files parse into their script's options, flags override a
file, bad files are one line naming the key or file, and `gptjax` reaches every script."""

import importlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gptjax.options import parse
from tests.cli import run
from tests.conftest import ROOT
from train import cli
from train.cli import COMMANDS
from train.eval_harness import Options as EvalHarness
from train.pretrain import Options as Pretrain

RECIPES = sorted((ROOT / "train" / "recipes").glob("*.toml"))


def recipe_command(path: Path) -> list[str]:
    """The command a recipe's first line states: `# gptjax SUB --config PATH ...`."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# gptjax "), f"{path.name}: the first line must state its command"
    words = shlex.split(first[2:])
    assert "--config" in words and words[words.index("--config") + 1] == str(path.relative_to(ROOT))
    return words[1:]


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_parses_into_its_scripts_options(path, monkeypatch):
    sub, *argv = recipe_command(path)
    module = importlib.import_module(COMMANDS[sub].target.split(":")[0])
    monkeypatch.chdir(ROOT)
    opts = parse(module.Options, argv)
    text = path.read_text()
    assert "Hardware:" in text and "Expect:" in text, f"{path.name}: say the hardware and result"
    import tomllib

    for key, value in tomllib.loads(text).items():
        got = getattr(opts, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, (path.name, key)


def test_flags_override_the_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lr: 0.01\nbatch_size: 4\nmax_steps: null\nprogress: false\n")
    opts = parse(Pretrain, ["--config", str(cfg), "--lr", "0.5"])
    assert (opts.lr, opts.batch_size, opts.max_steps, opts.progress) == (0.5, 4, None, False)
    toml = tmp_path / "run.toml"
    toml.write_text('dtype = "bfloat16"\nepochs = 3\nlog_to = ["jsonl", "tensorboard"]\n')
    opts = parse(Pretrain, [f"--config={toml}"])
    assert (opts.dtype, opts.log_to) == ("bfloat16", ("jsonl", "tensorboard"))


@pytest.mark.parametrize(
    "text, suffix, needle",
    [
        ("lrr = 0.1\n", ".toml", "unknown option 'lrr' (did you mean 'lr'?)"),
        ('lr = "fast"\n', ".toml", "'lr' must be a number, got 'fast'"),
        ('dtype = "float8"\n', ".toml", "'dtype' must be one of"),
        ("epochs = 1.5\n", ".toml", "'epochs' must be an integer, got 1.5"),
        ('log_to = ["mlflow"]\n', ".toml", "'log_to' must be one of"),
        ('log_to = "jsonl"\n', ".toml", "'log_to' must be a list"),
        ("lr = [\n", ".toml", "not valid TOML"),
        ("lr: [\n", ".yaml", "not valid YAML"),
        ("- 1\n", ".yaml", "expected key: value pairs"),
        (None, ".toml", "no such file"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, text, suffix, needle):
    path = tmp_path / f"bad{suffix}"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match="^.*$") as e:
        parse(Pretrain, ["--config", str(path)])
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_the_gptjax_command_lists_and_runs_every_subcommand(monkeypatch):
    # The console script itself, once; its subcommands in this process.
    exe = Path(sys.executable).with_name("gptjax")
    listing = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in listing.stdout
    monkeypatch.setattr(sys, "argv", ["gptjax"])
    same = run("train.cli", "pretrain", "--help").stdout
    monkeypatch.setattr(sys, "argv", ["train/pretrain.py"])
    module = run("train.pretrain", "--help").stdout
    flags = lambda text: sorted(w for w in text.split() if w.startswith("--"))
    assert flags(same) == flags(module) and "--max-steps" in flags(same)
    assert "usage: gptjax pretrain" in same
    bad = run("train.cli", "pretrian")
    assert bad.returncode == 2 and "did you mean 'pretrain'" in bad.error
    assert bad.stderr == bad.error + "\n"


@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in ("pretrain",)])
def test_every_subcommand_has_help(name, capsys, monkeypatch):
    # In this process (the console script itself is run above): each module is imported once.
    monkeypatch.setattr(sys, "argv", ["gptjax"])
    try:
        cli.main([name, "--help"])
    except SystemExit as e:
        assert e.code == 0
    assert f"usage: gptjax {name}" in capsys.readouterr().out


def readme_commands() -> list[list[str]]:
    """Every `gptjax ...` command the README shows, continuation lines joined, comments dropped,
    optional [--flag value] parts included, `a && b` as two commands."""
    lines, out = (ROOT / "README.md").read_text().splitlines(), []
    for i, line in enumerate(lines):
        if not line.startswith("    gptjax "):
            continue
        text = line
        while text.endswith("\\"):
            i += 1
            text = text[:-1] + lines[i]
        text = text.split(" # ")[0].replace("[", "").replace("]", "")
        out += [shlex.split(part)[1:] for part in text.split("&&")]
    return out


CLASSES = {  # the subcommands whose options are not a module's `Options`
    ("download",): "convert.__main__:Download",
    ("convert", "openai"): "convert.__main__:Convert",
    ("convert", "export-hf"): "convert.__main__:Convert",
    ("convert", "check"): "convert.__main__:Check",
    ("bench", "recipe"): "train.bench.recipe:Options",
    ("bench",): "train.bench.speed:Options",
}


def test_every_readme_command_parses():
    commands = readme_commands()
    assert len(commands) > 20
    for words in commands:
        if words in (["--help"], ["pretrain", "--help"], ["bench", "--list"]):  # not options
            continue
        key = next((k for k in CLASSES if tuple(words[: len(k)]) == k), None)
        if key:
            module, name = CLASSES[key].split(":")
            argv = words[len(key) :]
        else:
            module, name, argv = COMMANDS[words[0]].target.split(":")[0], "Options", words[1:]
        parse(getattr(importlib.import_module(module), name), argv)  # SystemExit on a bad flag


@pytest.mark.parametrize(
    "options, argv, needle",
    [
        (Pretrain, ["--lr", "fast"], "--lr: could not convert string to float: 'fast'"),
        (Pretrain, ["--dtype", "float8"], "invalid choice 'float8' for '--dtype'"),
        (Pretrain, ["--log-to", "jsonl", "mlflow"], "invalid choice 'mlflow' for '--log-to'"),
        (Pretrain, ["--resume", "maybe"], "--resume"),
        (Pretrain, ["--bogus", "1"], "unrecognized options: --bogus 1"),
        (Pretrain, ["--max-steps"], "--max-steps: expected a value"),
        (EvalHarness, [], "required: --ckpt, --tasks"),
    ],
)
def test_bad_flags_are_one_line(options, argv, needle, capsys):
    # Read from tyro's parse-error events (a private API of the tyro version pyproject pins):
    # each kind of event the project's commands can meet gives its one line.
    with pytest.raises(SystemExit) as e:
        parse(options, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and needle in err
    assert len(err.strip().splitlines()) == 1, err
