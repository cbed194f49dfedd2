"""TensorBoard and W&B get the records metrics.jsonl gets, and a resumed run continues both."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from gptjax.training import trackers
from gptjax.training.runlog import read_metrics
from tests.runs import pretrain

ARGS = ["--ckpt-every", "4", "--eval-every", "3", "--log-to", "jsonl", "tensorboard", "wandb"]


def tensorboard_scalars(folder: Path) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """Every scalar TensorBoard shows for the run in `folder` ({tag: [(step, value)]}) and its
    text tags, read by tensorboard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }, events.Tags()["tensors"]


def wandb_history(path: Path) -> tuple[str, list[int], dict]:
    """(run id, history steps, config) of an offline W&B run file (`run-ID.wandb`): a LevelDB
    log of protobuf Records (what `wandb sync` uploads) in 32 KiB blocks after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, pending = path.read_bytes(), [], b""
    assert data[:4] == b":W&B"
    pos, block = 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending += chunk
        if kind in (1, 4):  # FULL, LAST
            records.append(pb.Record.FromString(pending))
            pending = b""
    run_id, steps, config = None, [], {}
    for record in records:
        which = record.WhichOneof("record_type")
        if which == "run":
            run_id = record.run.run_id
            config = {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif which == "history":
            steps.append(record.history.step.num)
    return run_id, steps, config


def test_tensorboard_and_wandb_see_what_metrics_jsonl_has_across_a_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = pretrain(out, "--max-steps", "6", *ARGS)
    assert first.returncode == 0, first.stderr
    assert f"tensorboard --logdir {out}/tensorboard" in first.stdout
    shutil.rmtree(out / "checkpoints" / "6")  # as if killed after logging steps 5-6
    second = pretrain(out, "--max-steps", "8", *ARGS)
    assert second.returncode == 0, second.stderr
    assert "continuing from checkpoint 4" in second.stderr

    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    scalars, texts = tensorboard_scalars(out / "tensorboard")
    for key in records[0]:
        if key != "step":
            want = [(r["step"], np.float32(r[key])) for r in records if key in r]
            assert scalars[key] == want, key  # each step once: the redone 5-6 hide the first
    assert {"val_loss", "lr", "tokens_per_s"} <= set(scalars)
    assert "sample/text_summary" in texts and "config/text_summary" in texts

    runs = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    (first_id, first_steps, config), (second_id, second_steps, _) = map(wandb_history, runs)
    assert first_id == second_id == json.loads((out / "wandb.json").read_text())["id"]
    assert first_steps == list(range(1, 7)) and second_steps == [7, 8]  # no step twice
    assert config["model"]["emb_dim"] == 32 and config["options"]["max_steps"] == 6


def test_log_to_names_and_missing_extras_are_one_line(monkeypatch, capsys):
    from gptjax.options import parse
    from train.pretrain import Options

    opts = parse(Options, ["--log-to", "tensorboard", "jsonl", "tensorboard"])
    assert opts.loop_config().log_to == ("tensorboard", "jsonl")
    with pytest.raises(SystemExit):
        parse(Options, ["--log-to", "jsonl", "mlflow"])
    assert "invalid choice 'mlflow' for '--log-to'" in capsys.readouterr().err
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'gptjax\[wandb\]'"):
        trackers.check_installed(("jsonl", "wandb"))
