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

from gptjax import GPTConfig, generate, init_params
from gptjax.data import instruct
from gptjax.inference.generation import completion
from gptjax.inference.server import Background, create_app
from gptjax.model.classifier import init_classifier
from gptjax.store import Model
from train.bench.serve_load import expected  # greedy `generate` on each prompt alone
from train.serve import Options, load

CFG = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2, drop_rate=0.0
)
SLOTS = 4


@pytest.fixture(scope="module")
def params():
    params = jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(0))
    return jax.tree.map(lambda x: x * 4.0, params)  # peaked logits: no near-ties in argmax


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory, params):
    out = tmp_path_factory.mktemp("serve") / "tiny-instruct"
    return Model(CFG, params, task={"kind": "instruct", "template": "alpaca"}).save(out)


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
    # The loops of OpenAI's own examples: every chunk has a choice unless usage is asked for.
    stream = client.completions.create(prompt=prompt, stream=True, **kw)
    assert "".join(c.choices[0].text for c in stream) == want
    usage = {"include_usage": True}
    chunks = list(client.completions.create(prompt=prompt, stream=True, stream_options=usage, **kw))
    assert all(c.usage is None and c.choices for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 14
    assert chunks[-2].choices[0].finish_reason == "length"
    messages = [{"role": "user", "content": "Name a color."}]
    r = client.chat.completions.create(messages=messages, **kw)
    assert r.choices[0].message.content == want_chat
    text, chunks = "", []
    for chunk in client.chat.completions.create(messages=messages, stream=True, **kw):
        chunks.append(chunk)
        if chunk.choices[0].delta.content is not None:
            text += chunk.choices[0].delta.content
    assert text == want_chat
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks][-2:] == [None, "length"]
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


def test_logprobs_are_the_models_log_softmax(server, params, tmp_path):
    """Echoed prompt and generated tokens' log-probs and alternatives equal transformers'
    log_softmax on the exported model, greedy or sampled; streamed pieces add up to the whole."""
    import torch
    import transformers

    from convert import to_hf

    served, url = server
    to_hf(CFG, params, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = served.enc.encode("Every effort moves you forward")
    with torch.no_grad():
        full = torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), -1).numpy()
    for temperature in (0, 1.5):  # the log-probs do not depend on the sampling
        body = dict(prompt=ids, max_tokens=3, echo=True, logprobs=5, temperature=temperature)
        got = post(url + "/v1/completions", json.dumps({**body, "seed": 3}).encode())[1]
        lp = got["choices"][0]["logprobs"]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        n = len(ids)
        want = full[np.arange(n - 1), ids[1:]]
        np.testing.assert_allclose(lp["token_logprobs"][1:n], want, atol=1e-4)
        tops = [sorted(d.values(), reverse=True)[:5] for d in lp["top_logprobs"][1 : n + 1]]
        np.testing.assert_allclose(tops, -np.sort(-full, axis=-1)[:, :5], atol=1e-4)
        text = got["choices"][0]["text"]
        pieces = [
            text[o : o + len(t)] for t, o in zip(lp["tokens"], lp["text_offset"], strict=True)
        ]
        assert pieces[:n] == [served.enc.decode([t]) for t in ids]
        assert len(lp["tokens"]) == n + 3
    # The generated tokens too: greedy, then scored by transformers on prompt + answer.
    (row,) = generate(CFG, served.engine.params, [ids], max_new_tokens=3, eos_id=50256)
    answer = ids + completion(row, 3, 50256)
    with torch.no_grad():
        logits = hf(torch.tensor([answer])).logits[0].float()
    want = torch.log_softmax(logits, -1).numpy()[np.arange(n - 1, len(answer) - 1), answer[n:]]
    got = post(url + "/v1/completions", json.dumps({**body, "temperature": 0}).encode())[1]
    assert got["choices"][0]["text"] == served.enc.decode(answer)
    np.testing.assert_allclose(got["choices"][0]["logprobs"]["token_logprobs"][n:], want, atol=1e-4)
    # Streamed, the chunks' log-probs add up to the same lists.
    chunks = list(stream(url, {**body, "temperature": 0}))
    joined = {k: [x for c in chunks for x in c["choices"][0]["logprobs"][k]] for k in lp}
    assert joined == got["choices"][0]["logprobs"]
    # Scoring only: max_tokens 0 with echo.
    got = post(url + "/v1/completions", json.dumps({**body, "max_tokens": 0}).encode())[1]
    assert got["choices"][0]["text"] == served.enc.decode(ids)
    assert got["choices"][0]["finish_reason"] == "length"
    assert got["usage"]["completion_tokens"] == 0
    assert len(got["choices"][0]["logprobs"]["tokens"]) == n


def stream(url: str, body: dict):
    """The JSON chunks of a streamed completion (not the usage chunk)."""
    req = urllib.request.Request(
        url + "/v1/completions",
        json.dumps({**body, "stream": True}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        for line in r:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"]:
                    yield chunk


def test_n_samples_chat_logprobs_and_tokenizer_routes(server, client):
    served, url = server
    kw = dict(model="tiny-instruct", max_tokens=4, temperature=1.0)
    r = client.completions.create(prompt=["Hello", "Bye"], n=3, seed=5, **kw)
    assert [c.index for c in r.choices] == list(range(6))
    # Choice c answers prompt c // n, sample j drawing with seed + j.
    alone = client.completions.create(prompt="Bye", seed=7, **kw)
    assert r.choices[5].text == alone.choices[0].text
    assert len({c.text for c in r.choices[:3]}) > 1
    messages = [{"role": "user", "content": "Name a color."}]
    kw = dict(model="tiny-instruct", max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    r = client.chat.completions.create(messages=messages, **kw)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    assert all(t.logprob == t.top_logprobs[0].logprob for t in content)  # greedy
    assert all(bytes(t.bytes) == t.token.encode() for t in content)
    chunks = client.chat.completions.create(messages=messages, stream=True, **kw)
    streamed = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert streamed == content
    # vLLM's tokenizer routes, as lm-eval's remote tokenizer calls them.
    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    assert check_remote_tokenizer_support(url + "/v1/completions")
    remote = RemoteTokenizer(url + "/v1/completions")
    text = "Héllo,  wörld!\n\t<|endoftext|> 😀"
    ids = served.enc.encode(text, allowed_special={"<|endoftext|>"})
    assert remote.encode(text) == ids and remote.decode(ids) == text
    assert remote.eos_token_id == 50256
    info = post(
        url + "/tokenize", json.dumps({"prompt": "a b", "return_token_strs": True}).encode()
    )
    assert info[1] == {
        "count": 2,
        "max_model_len": 64,
        "tokens": [64, 275],
        "token_strs": ["a", " b"],
    }


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
    (
        "/v1/completions",
        b'{"prompt": "hi", "max_tokens": "ten"}',
        400,
        "max_tokens: Input should be a valid integer (got str 'ten')",
    ),
    ("/v1/completions", b'{"prompt": 7}', 400, "prompt: Input should be a valid string"),
    ("/v1/completions", json.dumps({"prompt": "word " * 70}).encode(), 400, "context is 64"),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": 500}', 400, "between 1 and 63"),
    ("/v1/completions", b'{"prompt": "hi", "temperature": 9}', 400, "temperature"),
    ("/v1/completions", b'{"prompt": "hi", "model": "gpt-4"}', 404, "'gpt-4' does not exist"),
    (
        "/v1/completions",
        b'{"prompt": "hi", "logprobs": 6}',
        400,
        "logprobs: Input should be less than or equal to 5",
    ),
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": 0}', 400, "0 only with echo"),
    (
        "/v1/completions",
        b'{"prompt": "hi", "n": 0}',
        400,
        "n: Input should be greater than or equal to 1",
    ),
    ("/v1/completions", b'{"prompt": ["a", "b"], "n": 200}', 400, "prompts times n"),
    ("/v1/completions", b'{"prompt": "hi", "n": 2, "best_of": 3}', 400, "best_of"),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "user"}], "top_logprobs": 2}',
        400,
        "needs logprobs",
    ),
    ("/detokenize", b'{"tokens": [50257]}', 400, "token ids in [0, 50257)"),
    ("/tokenize", b'{"text": "hi"}', 400, "'prompt'"),
    (
        "/v1/chat/completions",
        b'{"messages": [{"role": "robot"}]}',
        400,
        "messages[0].role: Input should be 'system'",
    ),
    (
        "/v1/chat/completions",
        b'{"messages": []}',
        400,
        "messages: List should have at least 1 item",
    ),
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
    return Model(CFG, params, head=head).save(out)


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
