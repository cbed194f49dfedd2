"""The server under load and in operation: its documented schema (and a fuzzer reading it),
fields it refuses, back-pressure (429), time limits (504), /health while compiling, /metrics,
and a graceful SIGTERM. Tiny models on 127.0.0.1, bounded loops."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jax
import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gptjax import GPTConfig, init_params
from gptjax.data import instruct
from gptjax.inference.server import Background, build, create_app
from gptjax.store import Model
from tests.conftest import ROOT
from tests.test_serve import post

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0
)


@pytest.fixture(scope="module")
def params():
    return jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))


def serve(params, **kw):
    return build(Model(CFG, params, task=instruct.TASK), "tiny", **kw)


def test_openapi_describes_every_body_and_refuses_by_name(params):
    served = serve(params, slots=2)
    with Background(create_app(served)) as url:
        spec = json.loads(urllib.request.urlopen(url + "/openapi.json").read())
        assert urllib.request.urlopen(url + "/docs").status == 200
        bodies = {
            path: ops["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            for path, ops in spec["paths"].items()
            if "post" in ops
        }
        assert set(bodies) == {
            "/v1/completions",
            "/v1/chat/completions",
            "/v1/classify",
            "/tokenize",
            "/detokenize",
        }
        fields = spec["components"]["schemas"]["CompletionRequest"]["properties"]
        temperature = next(t for t in fields["temperature"]["anyOf"] if t["type"] == "number")
        assert (temperature["minimum"], temperature["maximum"]) == (0, 2)
        assert {"prompt", "max_tokens", "stop", "logprobs", "echo", "n", "seed"} <= set(fields)

        ask = {"prompt": "Hi", "max_tokens": 2}
        for field, value in [
            ("tools", [{"type": "function"}]),
            ("logit_bias", {"50256": -100}),
            ("response_format", {"type": "json_object"}),
            ("presence_penalty", 0.5),
        ]:
            status, body = post(url + "/v1/completions", json.dumps({**ask, field: value}).encode())
            assert (status, body["error"]["param"]) == (400, field), body
            assert f"'{field}' is not supported" in body["error"]["message"]
        fine = {"user": "u1", "metadata": {"a": "b"}, "store": False, "unknown_field": 1}
        fine |= {"logit_bias": {}, "response_format": {"type": "text"}}
        assert post(url + "/v1/completions", json.dumps({**ask, **fine}).encode())[0] == 200
        for bad in ({"stream": 1}, {"temperature": "1"}, {"stream_options": {}}):
            status, body = post(url + "/v1/completions", json.dumps({**ask, **bad}).encode())
            assert (status, body["error"]["param"]) == (400, next(iter(bad))), body


def test_a_burst_beyond_the_queue_is_told_to_come_back(params):
    served = serve(params, slots=1, max_queue=2)
    with Background(create_app(served)) as url:
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0})

        def ask(_):
            req = urllib.request.Request(
                url + "/v1/completions", body.encode(), {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req) as r:
                    return r.status, None
            except urllib.error.HTTPError as e:
                return e.code, (e.headers.get("Retry-After"), json.loads(e.read()))

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(ask, range(8)))  # 4 x --max-queue at once
    refused = [extra for status, extra in got if status == 429]
    assert refused and sum(status == 200 for status, _ in got) >= 3
    assert all(status in (200, 429) for status, _ in got)
    assert all(r[0] == "1" and r[1]["error"]["code"] == "queue_full" for r in refused)


def test_a_request_past_the_timeout_gets_504_and_frees_its_slot(params):
    served = serve(params, slots=1, timeout=0.3)
    with Background(create_app(served)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        slow = {"role": "user", "content": "Tell a long story."}
        # 20 tokens at a few ms each would fit; a stalled engine would not: stall it.
        with Paused(served.engine), pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="tiny", messages=[slow], max_tokens=20)
        assert e.value.status_code == 504 and "--timeout 0.3 s" in e.value.message
        deadline = time.monotonic() + 20
        while served.engine.free() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served.engine.free() == 1
        # A streamed answer past the limit ends with OpenAI's error event.
        with Paused(served.engine), pytest.raises(openai.APIError, match="--timeout"):
            stream = client.chat.completions.create(
                model="tiny", messages=[slow], max_tokens=20, stream=True
            )
            list(stream)


class Paused:
    """Hold the engine's thread between steps (as a long prefill would)."""

    def __init__(self, engine):
        self.engine, self.run_step = engine, engine.run_step

    def __enter__(self):
        self.engine.run_step = lambda: time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.engine.run_step = self.run_step


def test_health_is_503_until_compiled_and_metrics_count(params):
    served = serve(params, slots=2)
    app = create_app(served)
    assert TestClient(app).get("/health").status_code == 503  # the engine has not started
    with Background(app) as url:  # waits for /health 200
        assert json.loads(urllib.request.urlopen(url + "/health").read())["status"] == "ready"
        ask = {"prompt": "Hello there", "max_tokens": 5, "temperature": 0}
        for _ in range(3):
            assert post(url + "/v1/completions", json.dumps(ask).encode())[0] == 200
        post(url + "/v1/completions", b'{"prompt": 7}')
        text = urllib.request.urlopen(url + "/metrics").read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    model = (("model_name", "tiny"),)
    assert samples["vllm:prompt_tokens_total", model] == 3 * 2
    assert samples["vllm:generation_tokens_total", model] == 3 * 5
    assert samples["vllm:time_to_first_token_seconds_count", model] == 3
    assert samples["vllm:inter_token_latency_seconds_count", model] == 3 * 4
    length = (("finished_reason", "length"), ("model_name", "tiny"))
    assert samples["vllm:request_success_total", length] == 3
    assert samples["vllm:num_requests_running", model] == 0
    http = lambda status: (
        ("handler", "/v1/completions"),
        ("method", "POST"),
        ("status", status),
    )
    assert samples["http_requests_total", http("200")] == 3
    assert samples["http_requests_total", http("400")] == 1


def health(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url + "/health") as r:
            return r.status, json.loads(r.read())["status"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["status"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "train.serve", "--preset", "tiny", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--grace", "60"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        from gptjax.inference.server import wait_ready

        wait_ready(url, 240)
        client = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        stream = client.completions.create(
            model="gpt2-tiny", prompt="Hello", max_tokens=250, temperature=0, stream=True
        )
        first = next(stream)  # in flight
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while health(url) != (503, "draining"):  # the signal taken, the stream still going
            assert time.monotonic() < deadline, "SIGTERM was not taken"
            time.sleep(0.01)
        status, body = post(url + "/v1/completions", b'{"prompt": "Hi"}')
        assert (status, body["error"]["code"]) == (503, "shutting_down")
        rest = list(stream)
        assert first.choices and rest[-1].choices[0].finish_reason in ("length", "stop")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert out.decode().strip().splitlines()[-1] == (
        "stopped on SIGTERM: requests in flight finished (none cut)"
    )


def test_fuzzed_by_its_own_schema(params):
    """schemathesis reads /openapi.json and sends valid and invalid requests to every
    endpoint: no 5xx, every error OpenAI's shape, the server healthy after."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    served = serve(params, slots=4)
    seen: dict[str, dict[int, int]] = {}
    with Background(create_app(served)) as url:
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        for result in schema.get_all_operations():
            op = result.ok()
            invalid = op.method.upper() == "POST"  # a GET without parameters has no bad form
            for mode in list(schemathesis.GenerationMode)[: 2 if invalid else 1]:
                fuzz(op, mode, url, seen.setdefault(op.label, {}), given, settings, HealthCheck)
        assert json.loads(urllib.request.urlopen(url + "/health").read())["status"] == "ready"
    print({label: dict(sorted(s.items())) for label, s in seen.items()})  # for the record
    assert sum(n for s in seen.values() for n in s.values()) >= 200
    assert len(seen) == 10 and all(seen.values())


def fuzz(op, mode, url, seen: dict, given, settings, HealthCheck, examples: int = 20):
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(op.as_strategy(generation_mode=mode))
    def one(case):
        response = case.call(base_url=url, timeout=60)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.body, response.text)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}, response.text

    one()


def test_soak_mode_hangs_up_on_every_fifth_and_checks_the_rest(params, tmp_path, capsys):
    from gptjax.store import Model
    from train.bench.serve_load import main

    ckpt = Model(CFG, params).save(tmp_path / "tiny")
    args = ["--ckpt", str(ckpt), "--soak", "--requests", "40", "--clients", "8"]
    main([*args, "--slots", "2", "--max-tokens", "8", "--prompts", "5"])  # exits on a failure
    out = capsys.readouterr().out
    row = out.splitlines()[-2].split()
    assert row[:4] == ["2", "40", "32", "32"]  # slots, requests, answered, equal
    assert "resident memory:" in out.splitlines()[-1]
