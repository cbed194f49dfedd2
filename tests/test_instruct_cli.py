"""train.instruct, train.dpo and train.judge end to end on tiny models and small files."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gptjax.training.runlog import read_metrics
from tests.cli import run
from tests.conftest import ROOT

FAST = [
    "--preset",
    "nano",
    "--max-length",
    "64",
    "--batch-size",
    "4",
    "--eval-batches",
    "1",
    "--no-progress",
]
WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree"]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """40 small instruction records (with preference answers too)."""
    path = tmp_path_factory.mktemp("data") / "records.json"
    rows = []
    for i in range(40):
        a, b = WORDS[i % 8], WORDS[(3 * i + 1) % 8]
        rows.append(
            {
                "instruction": f"Name the word after {a}.",
                "input": b if i % 3 else "",
                "output": f"The word is {b}.",
                "chosen": f"Certainly: {b}.",
                "rejected": f"No. {a}!",
            }
        )
    path.write_text(json.dumps(rows))
    return path


def train(module, out, *args):
    return run(module, "--out", out, *args)


def records_of(out):
    return read_metrics(out, timing=False)


@pytest.fixture(scope="module")
def instruct_run(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("instruct") / "run"
    res = train(
        "train.instruct",
        out,
        *FAST,
        "--data",
        str(records),
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--ckpt-every",
        "3",
        "--lr",
        "1e-3",
        "--max-new-tokens",
        "8",
        "--mask-instruction",
        *HARNESS,
    )
    assert res.returncode == 0, res.stderr
    return out, res


# An lm-eval task scored at the evaluations (tests/test_harness.py checks the scores).
HARNESS = ["--harness-tasks", "gj_gen", "--harness-limit", "2"]
HARNESS += ["--harness-include-path", str(ROOT / "tests" / "fixtures" / "harness")]


def test_instruct_trains_answers_and_resumes_exactly(records, instruct_run, tmp_path):
    out, res = instruct_run
    assert "compiles 1 step programs" in res.stdout  # every batch fits the 64-token bucket
    answers = json.loads((out / "test-responses.json").read_text())
    assert len(answers) == 4 and all("model_response" in a for a in answers)
    assert answers[0]["instruction"] == json.loads(records.read_text())[34]["instruction"]
    assert json.loads((out / "model" / "task.json").read_text())["kind"] == "instruct"
    split = tmp_path / "split"
    args = [
        *FAST,
        "--data",
        str(records),
        "--eval-every",
        "3",
        "--ckpt-every",
        "3",
        "--lr",
        "1e-3",
        "--max-new-tokens",
        "8",
        "--mask-instruction",
    ]
    assert train("train.instruct", split, *args, "--max-steps", "3").returncode == 0
    resumed = train("train.instruct", split, *args, "--max-steps", "6", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    scored = [r["step"] for r in records_of(out) if "harness/gj_gen/exact_match" in r]
    assert scored == [3, 6]  # at the evaluations; without --harness-tasks the records are equal:
    assert records_of(split) == [
        {k: v for k, v in r.items() if not k.startswith("harness/")} for r in records_of(out)
    ]
    assert (out / "harness.png").is_file()
    ask = run(
        "train.generate", "--ckpt", out, "--instruction", "Name a color.", "--max-new-tokens", "3"
    )
    assert ask.returncode == 0, ask.stderr
    assert "### Instruction" not in ask.stdout  # only the response is printed


def test_dpo_starts_at_log_two_and_raises_the_margin(records, instruct_run, tmp_path):
    out, _ = instruct_run
    res = train(
        "train.dpo",
        tmp_path / "dpo",
        "--init-from",
        str(out),
        "--data",
        str(records),
        "--max-length",
        "64",
        "--batch-size",
        "4",
        "--eval-batches",
        "2",
        "--no-progress",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--lr",
        "1e-4",
    )
    assert res.returncode == 0, res.stderr
    evals = [r for r in records_of(tmp_path / "dpo") if "val_loss" in r]
    first = records_of(tmp_path / "dpo")[0]
    assert first["train_loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy = reference
    assert evals[-1]["val_reward_margin"] > 0 and evals[-1]["val_loss"] < math.log(2)
    assert {"val_pref_acc", "val_chosen_reward", "eval_train_reward_margin"} <= set(evals[-1])
    assert (tmp_path / "dpo" / "rewards.png").stat().st_size > 1000


class Judge(BaseHTTPRequestHandler):
    """A judge server: the first request fails (500), then replies by prompt; model "missing"
    is not pulled. Serves both Ollama's /api/chat and the OpenAI /v1/chat/completions."""

    calls = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.calls += 1
        if body["model"] == "missing":
            return self.reply(404, {"error": "model 'missing' not found, try pulling it first"})
        if Judge.calls == 1:
            return self.reply(500, {"error": "warming up"})
        prompt = body["messages"][0]["content"]
        text = {"red": "85", "green": "Score: 40", "blue": "excellent"}.get(
            next((w for w in WORDS if f"response `The word is {w}" in prompt), ""), "70"
        )
        if self.path == "/api/chat":
            assert body["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
            return self.reply(200, {"message": {"role": "assistant", "content": text}})
        assert self.path == "/v1/chat/completions"
        return self.reply(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def reply(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_judge_scores_through_both_apis(tmp_path, api):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    Judge.calls = 0
    entry = {"instruction": "i", "input": "", "output": "o"}
    entries = [
        {**entry, "model_response": f"The word is {w}"} for w in ("red", "green", "blue", "cat")
    ]
    responses = tmp_path / "test-responses.json"
    responses.write_text(json.dumps(entries))
    judge = [responses, "--url", url, "--api", api, "--no-progress"]
    try:
        res = run("train.judge", *judge)
        assert res.returncode == 0, res.stderr
        scores = json.loads((tmp_path / "scores.json").read_text())
        assert scores["scores"] == [85, 40, None, 70] and scores["unparseable"] == 1
        assert "mean score 65.00 over 3 of 4 answers" in res.stdout
        missing = run("train.judge", *judge, "--model", "missing")
        assert missing.returncode == 2 and missing.stderr == missing.error + "\n"
        hint = "ollama pull missing" if api == "ollama" else "/v1/models"
        assert hint in missing.stderr
    finally:
        server.shutdown()
    down = run("train.judge", responses, "--url", "http://127.0.0.1:9", "--api", api)
    assert down.returncode == 2 and "cannot reach the judge" in down.stderr
