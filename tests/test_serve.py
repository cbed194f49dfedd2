"""`train.serve` through the official `openai` client on 127.0.0.1: answers equal `generate`,
concurrent requests equal one-by-one, bad input gets OpenAI-style errors, the key is checked."""

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import openai
import pytest

from gptjax import GPTConfig, init_params
from gptjax.data import instruct
from gptjax.inference.server import Background, create_app
from gptjax.model.classifier import init_classifier
from gptjax.training.checkpoint import save_model
from train.bench.serve_load import expected  # greedy `generate` on each prompt alone
from train.serve import Options, load

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0
)
SLOTS = 4


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory):
    params = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))
    params = jax.tree.map(lambda x: x * 4.0, params)  # peaked logits: no near-ties in argmax
    out = tmp_path_factory.mktemp("serve") / "tiny-instruct"
    return save_model(out, CFG, params, task={"kind": "instruct", "template": "alpaca"})


@pytest.fixture(scope="module")
def server(instruct_dir):
    served = load(Options(ckpt=str(instruct_dir), slots=SLOTS))
    with Background(create_app(served)) as url:
        yield served, url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0)


def test_kind_is_read_from_the_checkpoint(server, client):
    served, _ = server
    assert served.kind == "instruct"
    (model,) = client.models.list().data
    assert model.id == "tiny-instruct"


def test_completions_and_chat_equal_generate(server, client):
    served, _ = server
    prompt = "Every effort moves you"
    chat_prompt = instruct.format_prompt({"instruction": "Name a color."}) + instruct.RESPONSE
    want, want_chat = expected(served, [prompt, chat_prompt], 10)
    kw = dict(model="tiny-instruct", max_tokens=10, temperature=0)
    r = client.completions.create(prompt=prompt, **kw)
    assert r.choices[0].text == want
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (4, 10)
    chunks = list(client.completions.create(prompt=prompt, stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want
    assert chunks[-1].usage.total_tokens == 14
    messages = [{"role": "user", "content": "Name a color."}]
    r = client.chat.completions.create(messages=messages, **kw)
    assert r.choices[0].message.content == want_chat
    chunks = list(client.chat.completions.create(messages=messages, stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want_chat
    # A stop string ends the answer before it, streamed or not.
    stop = want[len(want) // 2 : len(want) // 2 + 2]
    r = client.completions.create(prompt=prompt, stop=[stop], **kw)
    assert r.choices[0].text == want[: want.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_concurrent_requests_equal_one_by_one(server, client):
    served, _ = server
    prompts = [f"Request number {i} asks:" + " more" * i for i in range(8)]
    want = expected(served, prompts, 8)
    ask = lambda p: client.completions.create(
        model="tiny-instruct", prompt=p, max_tokens=8, temperature=0
    )
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, prompts))
    assert [r.choices[0].text for r in got] == want


def post(url: str, data: bytes, headers=None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


BAD = [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", b"[1, 2]", 400, "JSON object"),
    ("/v1/completions", b'{"max_tokens": 3}', 400, "'prompt'"),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": "ten"}', 400, "'max_tokens' must be int"),
    ("/v1/completions", b'{"prompt": 7}', 400, "'prompt' must be str or list"),
    ("/v1/completions", json.dumps({"prompt": "word " * 70}).encode(), 400, "context is 64"),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": 500}', 400, "between 1 and 63"),
    ("/v1/completions", b'{"prompt": "hi", "temperature": 9}', 400, "temperature"),
    ("/v1/completions", b'{"prompt": "hi", "model": "gpt-4"}', 404, "'gpt-4' does not exist"),
    ("/v1/chat/completions", b'{"messages": [{"role": "robot"}]}', 400, "role"),
    ("/v1/chat/completions", b'{"messages": []}', 400, "must not be empty"),
    ("/v1/classify", b'{"texts": ["hi"]}', 400, "not a classifier"),
    ("/v1/nothing", b"{}", 404, "Not Found"),
    ("/v1/completions", b'{"prompt": "' + b"x" * (1 << 20) + b'"}', 413, "larger than"),
]


@pytest.mark.parametrize(("path", "data", "status", "message"), BAD, ids=[b[3] for b in BAD])
def test_bad_input_is_an_openai_error(server, path, data, status, message):
    got, body = post(server[1] + path, data)
    assert (got, message in body["error"]["message"]) == (status, True), body
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_server_survives_bad_input_and_a_client_leaving_mid_stream(server, client):
    served, url = server
    conn = http.client.HTTPConnection(url.removeprefix("http://"))
    body = {"prompt": "Hello", "max_tokens": 60, "temperature": 0, "stream": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.read1(64).startswith(b"data: ")
    assert served.engine.free() < SLOTS
    conn.close()  # gone mid-stream: its slot comes back
    deadline = time.time() + 20
    while served.engine.free() < SLOTS and time.time() < deadline:
        time.sleep(0.05)
    assert served.engine.free() == SLOTS
    r = client.completions.create(model="tiny-instruct", prompt="Hi", max_tokens=2)
    assert r.usage.completion_tokens == 2


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    params = jax.jit(init_classifier, static_argnums=(0, 1))(CFG, 2, jax.random.key(1))
    head = {"labels": ["ham", "spam"], "pad_id": 50256, "pooling": "last-non-pad"}
    out = tmp_path_factory.mktemp("serve") / "tiny-spam"
    return save_model(out, CFG, params, classifier=head)


def test_classifier_endpoint_and_api_key(classifier_dir):
    served = load(Options(ckpt=str(classifier_dir)))
    assert served.kind == "classifier" and served.engine is None
    texts = ["You won a prize! Call now", "See you at 6?"]
    body = json.dumps({"texts": texts}).encode()
    with Background(create_app(served, api_key="sesame")) as url:
        assert post(url + "/v1/classify", body)[0] == 401
        assert post(url + "/v1/classify", body, {"Authorization": "Bearer nope"})[0] == 401
        status, r = post(url + "/v1/classify", body, {"Authorization": "Bearer sesame"})
        assert urllib.request.urlopen(url + "/health").status == 200  # not under /v1: open
    assert status == 200, r
    probs = served.predictor([served.enc.encode_ordinary(t) for t in texts])
    for d, p in zip(r["data"], probs, strict=True):
        assert d["label"] == ["ham", "spam"][int(p.argmax())]
        np.testing.assert_allclose([d["probabilities"]["ham"], d["probabilities"]["spam"]], p)
    assert r["usage"]["prompt_tokens"] == sum(len(served.enc.encode(t)) for t in texts)


def test_background_server_stops(instruct_dir):
    before = threading.active_count()
    served = load(Options(ckpt=str(instruct_dir), slots=1))
    with Background(create_app(served)):
        pass
    assert threading.active_count() <= before + 1
