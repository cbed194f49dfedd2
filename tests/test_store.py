"""The one model record: `Model.open` reads every folder gptjax knows (its own model folders, runs,
Hugging Face and OpenAI folders) with the model's kind, and `save` writes what `open` reads."""

import json

import jax
import numpy as np
import pytest

from gptjax import GPTConfig, init_classifier, init_params
from gptjax.data import instruct
from gptjax.store import Model, open_or_preset
from gptjax.store.hf import to_hf
from tests.conftest import ROOT

CFG = GPTConfig.preset("nano")
HEAD = {"labels": ["ham", "spam"], "pad_id": 50256, "pooling": "last"}


def same_params(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def test_save_then_open_keeps_config_params_and_kind(params, tmp_path):
    lm = Model(CFG, params).save(tmp_path / "lm")
    opened = Model.open(lm)
    assert (opened.cfg, opened.kind, opened.head, opened.task) == (CFG, "lm", None, None)
    same_params(opened.params, params)

    tuned = Model(CFG, params, task=instruct.TASK).save(tmp_path / "run" / "model")
    assert json.loads((tuned / "task.json").read_text()) == instruct.TASK
    opened = Model.open(tmp_path / "run")  # a finished run stands for its final model
    assert (opened.kind, opened.task, opened.folder) == ("instruct", instruct.TASK, tuned)

    scored = init_classifier(CFG, 2, jax.random.key(1), base=params)
    Model(CFG, scored, head=HEAD).save(tmp_path / "spam")
    opened = Model.open(tmp_path / "spam")
    assert opened.kind == "classifier" and opened.head == {**HEAD, "max_length": 64}
    assert opened.module.num_classes == 2 and opened.module.pooling == "last"
    same_params(opened.params, scored)


def test_a_pretraining_run_opens_as_its_newest_checkpoint(reference_run):
    opened = Model.open(reference_run)
    assert opened.kind == "lm" and opened.cfg.emb_dim == CFG.emb_dim
    assert opened.folder == reference_run


def test_hugging_face_and_openai_folders_open_with_their_kind(params, tmp_path):
    to_hf(CFG, params, tmp_path / "hf")
    opened = Model.open(tmp_path / "hf" / "model.safetensors")  # the weights file names it too
    assert opened.kind == "lm" and opened.cfg == CFG
    same_params(opened.params, params)

    scored = init_classifier(CFG, 2, jax.random.key(1), base=params)
    to_hf(CFG, scored, tmp_path / "hf-spam", labels=["ham", "spam"])
    opened = Model.open(tmp_path / "hf-spam")
    assert opened.kind == "classifier" and opened.head["labels"] == ["ham", "spam"]

    fixture = ROOT / "tests" / "fixtures" / "openai-tiny"
    opened = Model.open(fixture)
    assert opened.kind == "lm" and opened.cfg.vocab_size == 64
    with pytest.raises(ValueError, match="vocabulary \\(64\\) is smaller than GPT-2's"):
        opened.encoding()


def test_what_is_not_a_model_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: no such model folder"):
        Model.open(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a gptjax model .* nor an OpenAI one") as e:
        Model.open(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="no complete checkpoint yet"):
        Model.open(tmp_path / "run")


def test_a_preset_stands_in_when_no_checkpoint_is_given():
    model = open_or_preset(None, "nano", seed=3)
    assert model.cfg == CFG and model.kind == "lm"
    same_params(model.params, init_params(CFG, jax.random.key(3)))
    shaped = open_or_preset(None, "nano", weights=False, drop_rate=0.0)
    assert shaped.params is None and shaped.cfg.drop_rate == 0.0
