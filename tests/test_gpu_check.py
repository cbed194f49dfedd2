"""The prepared GPU check keeps working: its dry mode runs every kind of case on CPU (nano
preset, a few steps), and the budget and time limits skip or stop a case with the reason."""

import json

from train.bench import gpu_check
from train.bench.gpu_check import Case, run_case


def test_the_gpu_check_runs_dry_on_cpu(tmp_path, capsys):
    out = tmp_path / "check.json"
    gpu_check.main(["--dry", "--out", str(out), "--budget", "500"])
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["backend"] == "cpu" and env["versions"]["jaxlib"] and env["devices"]
    assert [c["status"] for c in report["cases"]] == ["ok"] * 3, report["cases"]
    with_it, without = (c["rows"][0] for c in report["cases"][:2])
    assert with_it["ms"] > 0 and without["ms"] > 0
    assert with_it["workaround"] is without["workaround"] is False  # never on a CPU
    rows = report["cases"][2]["rows"]
    assert [(r["what"], r["impl"]) for r in rows] == [
        ("train_step", "gptjax"),
        ("train_step", "hf-torch"),
        ("train_modern", "gptjax"),
        ("generate", "gptjax"),
        ("generate", "hf-torch"),
    ]
    assert all(r["tok_per_s"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "scatter-add, no workaround" in printed and f"wrote {out}" in printed


def test_a_case_is_skipped_past_the_budget_and_stopped_at_its_limit():
    slow = Case("slow", 1, ["timeit", "-n", "1", "import time; time.sleep(30)"])
    assert run_case(slow, left=0.5)["status"] == "skipped"
    assert run_case(slow, left=100)["status"] == "timeout"
    failing = run_case(Case("bad", 60, ["train.bench.speed", "--presets", "nope"]), left=100)
    assert failing["status"] == "failed" and failing["note"]
