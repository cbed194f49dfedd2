"""lm-evaluation-harness tasks on any checkpoint (ours, Hugging Face or OpenAI), computed in JAX.

    python -m train.eval_harness --ckpt runs/gpt2-124M --tasks hellaswag arc_easy lambada_openai
    python -m train.eval_harness --ckpt runs/demo --tasks my_task --include-path my-tasks/
    python -m train.eval_harness --ckpt runs/rl/model --tasks gsm8k --apply-chat-template

runs lm-eval's own `simple_evaluate` with a gptjax model (see `gptjax.eval.harness`) and prints
lm-eval's results table. --output-path DIR writes what `lm_eval --output_path DIR` writes, through
lm-eval's own EvaluationTracker: DIR/<checkpoint path, sanitized>/results_<time>.json, and with
--log-samples a samples_<task>_<time>.jsonl per task beside it (a path ending in .json: those
files beside it, named after it, as lm-eval does). --apply-chat-template scores a ChatML model
(`gptjax instruct --template chatml`, `gptjax rl`) through its own chat template, as
`lm_eval --apply_chat_template` does with the exported folder (few-shot examples as turns unless
--no-fewshot-as-multiturn). --tasks takes names apart or lm-eval's comma form (a,b). Needs the
`eval` extra: pip install 'gptjax[eval]'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gptjax.data import chat
from gptjax.options import parse, run_cli
from gptjax.store import Model


@dataclass(frozen=True)
class Options:
    ckpt: str
    """checkpoint, run, Hugging Face or OpenAI folder"""
    tasks: tuple[str, ...]
    """lm-eval task names (groups too, e.g. hellaswag arc_easy, or hellaswag,arc_easy)"""
    include_path: str | None = None
    """a folder of your own task YAML files"""
    num_fewshot: int | None = None
    """examples in each prompt (default: the task's own)"""
    limit: float | None = None
    """evaluate only the first N documents of each task (a fraction if < 1)"""
    batch_size: int = 16
    """rows per batch, across all devices"""
    output_path: str | None = None
    """a folder for lm-eval's results files (as lm_eval --output_path)"""
    log_samples: bool = False
    """with --output-path: also write every sample (inputs, outputs, scores)"""
    seed: int = 1234
    """seed for the order of few-shot examples (lm-eval's default)"""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """compute dtype (log-probs are float32 either way)"""
    apply_chat_template: bool = False
    """prompts in the model's chat template (a ChatML model), as lm_eval --apply_chat_template"""
    fewshot_as_multiturn: bool | None = None
    """few-shot examples as turns of the conversation (default: with --apply-chat-template)"""
    system_instruction: str | None = None
    """a system message before each prompt (as lm_eval --system_instruction)"""

    @property
    def names(self) -> list[str]:
        """The task names, lm-eval's comma form split."""
        return [n for item in self.tasks for n in item.split(",") if n]

    @property
    def multiturn(self) -> bool:
        turns = (
            self.apply_chat_template
            if self.fewshot_as_multiturn is None
            else self.fewshot_as_multiturn
        )
        if turns and not self.apply_chat_template:
            raise ValueError("--fewshot-as-multiturn needs --apply-chat-template")
        return turns


def evaluate(lm, names: list[str], manager, opts: Options, tracker) -> dict:
    """lm-eval's simple_evaluate over `names`; a task whose files do not parse is one line."""
    from lm_eval import simple_evaluate

    try:
        return simple_evaluate(
            model=lm,
            model_args={"pretrained": opts.ckpt},  # names the results folder, as lm_eval's
            tasks=names,
            num_fewshot=opts.num_fewshot,
            limit=opts.limit,
            task_manager=manager,
            log_samples=opts.log_samples,
            evaluation_tracker=tracker,
            random_seed=opts.seed,
            numpy_random_seed=opts.seed,
            torch_random_seed=opts.seed,
            fewshot_random_seed=opts.seed,
            apply_chat_template=opts.apply_chat_template,
            fewshot_as_multiturn=opts.multiturn,
            system_instruction=opts.system_instruction,
        )
    except (KeyError, FileNotFoundError, TypeError) as e:  # a task's YAML or data
        raise ValueError(f"--tasks {','.join(names)}: the task did not load ({e})") from None


def save(tracker, results: dict, log_samples: bool) -> None:
    """What lm_eval's command line writes after an evaluation, written by lm-eval itself."""
    samples = results.pop("samples", None) if log_samples else None
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"] if log_samples else ():
        tracker.save_results_samples(task_name=task, samples=samples[task])


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    try:
        from lm_eval.loggers import EvaluationTracker
        from lm_eval.utils import make_table

        from gptjax.eval.harness import GptjaxLM, task_manager
    except ImportError:
        raise ValueError("lm-eval is not installed; pip install 'gptjax[eval]'") from None
    names, _ = opts.names, opts.multiturn  # (a bad combination is refused before any work)
    model = Model.open(opts.ckpt)
    enc = model.encoding()  # refuses a vocabulary smaller than its tokenizer
    template = chat.template_of(model.task)
    if opts.apply_chat_template and template != "chatml":
        raise ValueError(
            f"--apply-chat-template: {opts.ckpt} answers in the {template} template; only "
            "ChatML models (gptjax instruct --template chatml, gptjax rl) have a chat template"
        )
    manager = task_manager(opts.include_path, names)
    lm = GptjaxLM(
        model.cfg,
        model.params,
        batch_size=opts.batch_size,
        dtype=opts.dtype,
        enc=enc,
        template=template,
    )
    tracker = EvaluationTracker(output_path=opts.output_path)
    results = evaluate(lm, names, manager, opts, tracker)
    print(make_table(results))
    if opts.output_path:
        save(tracker, results, opts.log_samples)
        print(f"results: {tracker_files(opts.output_path, tracker)}")


def tracker_files(output_path: str, tracker) -> Path:
    """Where lm-eval's tracker put the results: the folder of them."""
    path = Path(output_path)
    if path.suffix == ".json":
        return path.parent
    return path / tracker.general_config_tracker.model_name_sanitized


if __name__ == "__main__":
    run_cli(main)
