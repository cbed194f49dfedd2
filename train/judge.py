"""Score a model's answers with a judge LLM (the book's chapter 7.8), served locally by Ollama or
any OpenAI-compatible server (vLLM, llama.cpp's server, ...).

    ollama serve & ollama pull llama3
    python -m train.judge runs/instruct/test-responses.json [--model llama3]
    python -m train.judge RESPONSES.json --api openai --url http://localhost:8080 --model m

sends each entry the book's prompt, reads an integer from 0 to 100 from the reply, prints a
progress bar, the mean score and how many replies held no score, and writes scores.json beside
the responses.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm
from tyro.conf import Positional

from gptjax.data import chat
from gptjax.data.instruct import format_prompt
from gptjax.files import write_json
from gptjax.options import parse, run_cli


@dataclass(frozen=True)
class Options:
    responses: Positional[str]
    """JSON list of entries with `output` and `model_response`"""
    model: str = "llama3"
    """the judge model's name on the server"""
    url: str = "http://localhost:11434"
    """the server (Ollama's default port)"""
    api: Literal["ollama", "openai"] = "ollama"
    """how to talk to it"""
    retries: int = 3
    """attempts per request before giving up"""
    timeout: float = 120.0
    """seconds to wait for one reply"""
    progress: bool = True
    """show a progress bar"""


def judge_prompt(entry: dict) -> str:
    """The book's scoring prompt (a chat's input: its conversation in ChatML)."""
    given = chat.render(entry["messages"]) if "messages" in entry else format_prompt(entry)
    return (
        f"Given the input `{given}` and correct output `{entry['output']}`, "
        f"score the model response `{entry['model_response']}` on a scale from 0 to 100, "
        "where 100 is the best score. Respond with the integer number only."
    )


def request(opts: Options, prompt: str) -> str:
    """The judge's reply text; user-facing errors for a server that is down or lacks the model."""
    messages = [{"role": "user", "content": prompt}]
    if opts.api == "ollama":
        path, body = (
            "/api/chat",
            {
                "model": opts.model,
                "messages": messages,
                "stream": False,
                "options": {"seed": 123, "temperature": 0, "num_ctx": 2048},
            },
        )
    else:
        path, body = (
            "/v1/chat/completions",
            {"model": opts.model, "messages": messages, "seed": 123, "temperature": 0},
        )
    req = urllib.request.Request(
        opts.url.rstrip("/") + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=opts.timeout) as r:
        reply = json.loads(r.read())
    if opts.api == "ollama":
        return reply["message"]["content"]
    return reply["choices"][0]["message"]["content"]


def ask(opts: Options, prompt: str) -> str:
    """`request` with retries; a refused connection or a missing model fails at once."""
    for attempt in range(opts.retries):
        try:
            return request(opts, prompt)
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:200]
            if e.code == 404:
                hint = (
                    f"run `ollama pull {opts.model}`"
                    if opts.api == "ollama"
                    else "check --model against the server's /v1/models"
                )
                raise ValueError(
                    f"{opts.url}: no model {opts.model!r} ({detail.strip()}); {hint}"
                ) from None
            failure = f"HTTP {e.code}: {detail}"
        except urllib.error.URLError as e:
            if isinstance(e.reason, ConnectionRefusedError):
                hint = "start it with `ollama serve`" if opts.api == "ollama" else "start it"
                raise ValueError(
                    f"cannot reach the judge at {opts.url} ({e.reason}); {hint}"
                ) from None
            failure = str(e.reason)
        except (TimeoutError, json.JSONDecodeError, KeyError, IndexError) as e:
            failure = f"{type(e).__name__}: {e}"
        time.sleep(min(2.0**attempt, 10.0) * 0.1)
    raise ValueError(f"{opts.url}: no usable reply after {opts.retries} attempts ({failure})")


def parse_score(reply: str) -> int | None:
    """The first integer in the reply, if it is a score from 0 to 100."""
    m = re.search(r"-?\d+", reply)
    return int(m.group()) if m and 0 <= int(m.group()) <= 100 else None


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    path = Path(opts.responses)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    for i, e in enumerate(entries):
        asked = "messages" if "messages" in e else "instruction"  # a chat, or an Alpaca record
        missing = [k for k in (asked, "output", "model_response") if k not in e]
        if missing:
            raise ValueError(f"{path}: entry {i} has no {', '.join(missing)}")
    scores, replies = [], []
    for entry in tqdm(entries, desc="judging", unit="entry", disable=not opts.progress):
        reply = ask(opts, judge_prompt(entry))
        replies.append(reply)
        scores.append(parse_score(reply))
    valid = [s for s in scores if s is not None]
    mean = sum(valid) / len(valid) if valid else float("nan")
    out = path.with_name("scores.json")
    result = {
        "model": opts.model,
        "mean": mean,
        "scored": len(valid),
        "unparseable": len(scores) - len(valid),
        "scores": scores,
        "replies": replies,
    }
    write_json(out, result)
    print(
        f"mean score {mean:.2f} over {len(valid)} of {len(scores)} answers "
        f"({len(scores) - len(valid)} replies held no score): {out}"
    )


if __name__ == "__main__":
    run_cli(main)
