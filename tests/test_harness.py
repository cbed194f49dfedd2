"""lm-evaluation-harness through gptjax, and through `gptjax serve` with lm-eval's
`local-completions` model, equals lm-eval's own `hf` model on the exported folder: the same
metrics, per-sample log-likelihoods within 1e-4 and the same generations, on a small offline
task set (tests/fixtures/harness: multiple choice, generate_until, perplexity)."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from convert import to_hf
from gptjax import GPTConfig, init_params
from gptjax.store import Model
from tests.conftest import ROOT

lm_eval = pytest.importorskip("lm_eval")
TASKS = ["gj_mc", "gj_gen", "gj_ppl"]
INCLUDE = str(ROOT / "tests" / "fixtures" / "harness")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny GPT with GPT-2's vocabulary, as a gptjax checkpoint and as a Hugging Face folder."""
    path = tmp_path_factory.mktemp("harness")
    cfg = GPTConfig.preset("tiny", context_length=64, emb_dim=64, n_heads=2, n_layers=1)
    params = jax.tree.map(lambda x: x * 3.0, init_params(cfg, jax.random.key(0)))  # peakier
    Model(cfg, params).save(path / "ours")
    to_hf(cfg, params, path / "hf")
    return path


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.chdir(ROOT)  # the task YAMLs name their data relative to the repository
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def responses(results: dict) -> dict:
    """{(task, doc_id, i): the i-th response of that document}: (loglikelihood, greedy) pairs,
    rolling log-likelihoods or generated strings."""
    out = {}
    for task, samples in results["samples"].items():
        for s in samples:
            for i, r in enumerate(s["resps"]):
                out[task, s["doc_id"], i] = r[0]
    return out


def hf_results(folder: Path, tasks: list[str], **options) -> dict:
    """lm-eval's `hf` model (transformers on torch) on an exported folder: the reference."""
    from lm_eval.tasks import TaskManager

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={folder},dtype=float32",
            tasks=tasks,
            task_manager=TaskManager(include_path=INCLUDE, include_defaults=False),
            log_samples=True,
            batch_size=4,
            device="cpu",
            **options,
        )
    return json.loads(json.dumps(results, default=str))


@pytest.fixture(scope="module")
def hf(model):
    return hf_results(model / "hf", TASKS)


def as_type_of(value, like):
    """`value` as the type of `like`, where lm-eval's saved samples turned it into a string."""
    if isinstance(like, list | tuple):
        return [as_type_of(v, w) for v, w in zip(value, like, strict=True)]
    if isinstance(value, str) and isinstance(like, bool):
        return value == "True"
    if isinstance(value, str) and isinstance(like, float):
        return float(value)
    return value


def same_answers(ours: dict, hf: dict, tasks: list[str], least: int = 30) -> None:
    a, b = responses(ours), responses(hf)
    assert a.keys() == {k: v for k, v in b.items() if k[0] in tasks}.keys() and len(a) > least
    for key, mine in a.items():
        theirs = b[key]
        mine = as_type_of(mine, theirs)  # lm-eval saves the samples' responses as strings
        if isinstance(mine, str):
            assert mine == theirs, key
        elif isinstance(mine, list):  # (loglikelihood, is_greedy)
            assert mine[0] == pytest.approx(theirs[0], abs=1e-4) and mine[1] == theirs[1], key
        else:
            assert mine == pytest.approx(theirs, abs=1e-4), key
    for task in tasks:
        for metric, value in ours["results"][task].items():
            if isinstance(value, float) and "stderr" not in metric:
                assert value == pytest.approx(hf["results"][task][metric], rel=1e-4), metric
    assert any(a[k] for k in a if k[0] == "gj_gen")  # the generations are not all empty


def context(arguments) -> str:
    """A sample's prompt, from lm-eval's samples in memory or as its files save them."""
    if isinstance(arguments, dict):  # saved: {"gen_args_0": {"arg_0": context, ...}}
        return arguments["gen_args_0"]["arg_0"]
    return arguments[0][0]


def read_output(folder: Path) -> dict:
    """lm-eval's output in `folder` read the way a user's script reads it, with lm-eval's own
    file-name helpers: the newest results_*.json, and each task's samples_*.jsonl."""
    from lm_eval.utils import get_file_task_name, get_results_filenames
    from lm_eval.utils import get_sample_results_filenames as sample_files

    names = [str(p) for p in folder.iterdir()]
    (results,) = get_results_filenames(names)
    out = json.loads(Path(results).read_text())
    out["samples"] = {
        get_file_task_name(Path(f).name): [json.loads(x) for x in Path(f).read_text().splitlines()]
        for f in sample_files(names)
    }
    return out


def test_gptjax_and_the_hf_model_give_the_same_answers(model, hf, tmp_path, capsys):
    from lm_eval.utils import sanitize_model_name

    from train.eval_harness import main

    out = tmp_path / "results"
    args = ["--ckpt", str(model / "ours"), "--tasks", *TASKS, "--include-path", INCLUDE]
    main([*args, "--output-path", str(out), "--log-samples", "--batch-size", "4"])
    assert "gj_mc" in capsys.readouterr().out  # lm-eval's table
    # lm_eval --output_path's layout: a folder named after the model, as lm-eval names it.
    folder = out / sanitize_model_name(str(model / "ours"))
    assert [p.name for p in out.iterdir()] == [folder.name]
    ours = read_output(folder)
    assert set(ours["samples"]) == set(TASKS)
    same_answers(ours, hf, TASKS)
    assert np.isfinite(ours["results"]["gj_ppl"]["word_perplexity,none"])

    # A path ending in .json: lm-eval's results file beside it, named after it.
    single = tmp_path / "one" / "scores.json"
    main([*args[:3], "gj_mc", *args[-2:], "--output-path", str(single), "--limit", "2"])
    (written,) = single.parent.iterdir()
    assert written.name.startswith("scores_") and written.suffix == ".json"
    assert json.loads(written.read_text())["results"]["gj_mc"]["acc,none"] >= 0


def test_lm_eval_through_the_server_gives_the_same_answers(model, hf):
    """lm-eval's `local-completions` as vLLM users run it: echo + logprobs scoring, stop
    strings, and the server's /tokenize and /tokenizer_info as its tokenizer (no download)."""
    from lm_eval.tasks import TaskManager

    from gptjax.inference.server import Background, create_app
    from train.serve import Options, load

    served = load(Options(ckpt=str(model / "ours"), slots=4))
    tasks = ["gj_mc", "gj_gen"]  # rolling windows differ: lm-eval keeps a token for the answer
    with Background(create_app(served)) as url:
        args = f"base_url={url}/v1/completions,model=ours,max_length=64,num_concurrent=4"
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=args,
            tasks=tasks,
            task_manager=TaskManager(include_path=INCLUDE, include_defaults=False),
            log_samples=True,
        )
    same_answers(json.loads(json.dumps(results, default=str)), hf, tasks)


def test_bad_tasks_are_one_line(model, capsys):
    from train.eval_harness import main

    with pytest.raises(ValueError, match="unknown lm-eval task 'no_such_task'"):
        main(["--ckpt", str(model / "ours"), "--tasks", "no_such_task", "--include-path", INCLUDE])
    with pytest.raises(ValueError, match="--include-path .*: no such folder"):
        main(["--ckpt", str(model / "ours"), "--tasks", "gj_mc", "--include-path", "/nope"])
    with pytest.raises((ValueError, FileNotFoundError), match="no-such-checkpoint"):
        main(["--ckpt", "no-such-checkpoint", "--tasks", "gj_mc", "--include-path", INCLUDE])


def test_pretrain_scores_lm_eval_tasks_at_its_evaluations(tmp_path):
    from tests.runs import pretrain

    out = tmp_path / "run"
    res = pretrain(
        out,
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--harness-tasks",
        "gj_mc",
        "gj_gen",
        "--harness-include-path",
        INCLUDE,
        "--harness-every",
        "2",
        "--harness-limit",
        "4",
    )
    assert res.returncode == 0, res.stderr
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "harness/gj_mc/acc" in r]
    assert [r["step"] for r in scored] == [2, 4]
    assert all(
        0 <= r["harness/gj_mc/acc_norm"] <= 1 and "harness/gj_gen/exact_match" in r for r in scored
    )
    assert (out / "harness.png").stat().st_size > 1000


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny ChatML model (GPT-2's vocabulary and the two chat tokens), as a gptjax model
    folder and exported as transformers reads it (its jinja chat template included)."""
    from gptjax.data import chat, tokenizer
    from tests.cli import run

    path = tmp_path_factory.mktemp("harness-chat")
    enc = chat.chat_encoding(tokenizer.gpt2())
    cfg = GPTConfig.preset(
        "tiny", vocab_size=enc.n_vocab, context_length=128, emb_dim=64, n_heads=2, n_layers=1
    )
    params = jax.tree.map(lambda x: x * 3.0, init_params(cfg, jax.random.key(1)))
    Model(cfg, params, task=chat.TASK, tokenizer=enc).save(path / "ours")
    assert run("convert.__main__", "export-hf", path / "ours", path / "hf").returncode == 0
    return path


def test_a_chat_model_in_its_template_equals_lm_evals_hf_with_apply_chat_template(
    chat_model, model, tmp_path
):
    from lm_eval.utils import sanitize_model_name

    from tests.cli import run

    out, tasks = tmp_path / "results", ["gj_gen", "gj_mc"]
    res = run(
        "train.eval_harness",
        *("--ckpt", chat_model / "ours", "--tasks", ",".join(tasks), "--include-path", INCLUDE),
        *("--apply-chat-template", "--num-fewshot", "1", "--batch-size", "4"),
        *("--output-path", out, "--log-samples", "--limit", "4"),
    )
    assert res.returncode == 0, res.stderr
    ours = read_output(out / sanitize_model_name(str(chat_model / "ours")))
    hf = hf_results(chat_model / "hf", tasks, num_fewshot=1, limit=4, apply_chat_template=True)
    # The same prompts: ChatML, the few-shot example a turn of its own before the question.
    prompts = lambda r: [context(s["arguments"]) for s in r["samples"]["gj_gen"]]
    assert prompts(ours) == prompts(hf)
    first = str(prompts(ours)[0])
    assert first.count("<|im_start|>user") == 2 and "<|im_start|>assistant\n" in first
    same_answers(ours, hf, tasks, least=8)
    plain = ["--ckpt", model / "ours", "--tasks", "gj_gen", "--include-path", INCLUDE]
    refused = run("train.eval_harness", *plain, "--apply-chat-template")
    assert refused.returncode == 2 and "answers in the alpaca template" in refused.error
