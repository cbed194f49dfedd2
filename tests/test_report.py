"""The report card gathers what runs hold, and leaves out the stages no run holds."""

from __future__ import annotations

import json

from gptjax.data import bpe
from tests.cli import run


def test_report_card_gathers_runs_and_leaves_out_missing_stages(reference_run, tmp_path):
    tok = bpe.save(bpe.train(["a small text to learn a few merges from"], 270), tmp_path / "tok")
    rl = tmp_path / "rl"
    rl.mkdir()
    (rl / "config.json").write_text(json.dumps({"task": "rl", "command": "python -m train.rl"}))
    records = [{"step": s, "reward": r, "examples_per_s": 3.0} for s, r in [(1, 0.25), (2, 0.5)]]
    records[-1]["val_reward"] = 0.75
    (rl / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (rl / "reward.png").write_bytes(b"png")
    res = run("train.report", tok, reference_run, rl, "--out", tmp_path / "card")
    assert res.returncode == 0, res.stderr
    card = json.loads((tmp_path / "card" / "report.json").read_text())
    stages = [r["stage"] for r in card["runs"]]
    assert stages == ["tokenizer", "pretraining", "RL"]
    pre, rl_entry = card["runs"][1]["figures"], card["runs"][2]["figures"]
    assert pre["steps"] == 24 and "val loss" in pre and "val bits per byte" in pre
    assert "judge score" not in json.dumps(card) and "HellaSwag" not in json.dumps(pre)
    assert rl_entry["sampled reward"] == 0.5 and rl_entry["sampled reward, first"] == 0.25
    md = (tmp_path / "card" / "report.md").read_text()
    assert "## RL: rl" in md and "![reward.png](rl/reward.png)" in md
    assert (tmp_path / "card" / "rl" / "reward.png").is_file()
    res = run("train.report", tmp_path / "nothing", "--out", tmp_path / "card2")
    assert res.returncode == 2 and "no such run folder" in res.error
