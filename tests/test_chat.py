"""Multi-turn chat: `train.instruct --template chatml` grows the embeddings for <|im_start|> and
<|im_end|> and records it; the exported model's `apply_chat_template` gives gptjax's ids; the
server answers chats in the model's own template and stops at <|im_end|>."""

from __future__ import annotations

import json

import pytest

from gptjax.data import arithmetic, chat
from gptjax.inference import generation
from gptjax.inference.server import Background, create_app
from gptjax.store import Model
from tests.cli import run
from train.serve import Options, load


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat")
    data = folder / "chats.jsonl"
    turn = lambda r: [
        {"role": "user", "content": r["question"]},
        {"role": "assistant", "content": r["answer"]},
    ]
    convs = [turn(r) for r in arithmetic.records(40, seed=0, max_operand=9)]
    convs[0] = [{"role": "system", "content": "Be brief."}, *convs[0], *convs[1]]
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs))
    out = folder / "run"
    res = run("train.instruct", "--preset", "nano", "--template", "chatml", "--data", data,
              "--max-steps", "2", "--batch-size", "4", "--max-new-tokens", "4", "--answer-batch",
              "4", "--eval-batches", "1", "--out", out, "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return out


def test_chat_finetuning_grows_the_vocabulary_and_records_it(chat_run):
    model = Model.open(chat_run)
    assert model.cfg.vocab_size == 50259 and model.params["wte"]["embedding"].shape[0] == 50259
    assert model.task["template"] == "chatml"
    assert model.task["grown"] == {"from": 50257, "to": 50259, "tokens": list(chat.TOKENS)}
    enc = model.encoding()
    assert enc.encode("<|im_end|>", allowed_special="all") == [50258]
    answers = json.loads((chat_run / "test-responses.json").read_text())
    assert answers and all({"messages", "output", "model_response"} <= set(a) for a in answers)


def test_exported_chat_template_gives_gptjax_ids(chat_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert run("convert.__main__", "export-hf", chat_run, tmp_path / "hf").returncode == 0
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    enc = Model.open(chat_run).encoding()
    messages = [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "What is 2 + 3?"},
        {"role": "assistant", "content": "2 + 3 = 5"},
        {"role": "user", "content": "And 4 * 4?"},
    ]
    theirs = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    theirs = theirs["input_ids"] if hasattr(theirs, "keys") else theirs
    assert list(theirs) == chat.encode(enc, messages, add_generation_prompt=True)
    generation_config = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert generation_config["eos_token_id"] == [50256, 50258]


def test_the_server_chats_in_the_models_template(chat_run):
    openai = pytest.importorskip("openai")
    served = load(Options(ckpt=str(chat_run), slots=2))
    assert served.template == "chatml" and served.tokenizer_info["chat_template"] == chat.JINJA
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = chat.encode(served.enc, messages, add_generation_prompt=True)
    end = served.enc.encode("<|im_end|>", allowed_special="all")[0]
    (row,) = generation.generate(served.cfg, served.engine.params, [ids], max_new_tokens=6)
    want = served.enc.decode(generation.completion(row, 6, end))
    with Background(create_app(served)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        r = client.chat.completions.create(
            model="run", messages=messages, max_tokens=6, temperature=0
        )
    assert r.choices[0].message.content == want


def test_an_exported_chat_model_opens_as_one(chat_run, tmp_path):
    assert run("convert.__main__", "export-hf", chat_run, tmp_path / "hf").returncode == 0
    back = Model.open(tmp_path / "hf")
    assert back.task == chat.TASK and back.encoding().n_vocab == 50259
