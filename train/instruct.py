"""Finetune GPT-2 to follow instructions (the book's chapter 7), then answer the test split.

    python -m train.instruct --init-from runs/gpt2-355M --data instruction-data --out runs/instruct
    python -m train.instruct --preset tiny --max-steps 40 --out runs/instruct-tiny
    python -m train.instruct --init-from runs/pretrain --template chatml --data chats.jsonl \
        --out runs/chat
    python -m train.instruct answer --ckpt runs/instruct [--answer-batch 8]

Training prints the trainable parameter count and the step programs an epoch compiles (one per
bucket length), a progress bar and train/val loss at each evaluation; at the end it answers the
test split in batches (greedy, up to --max-new-tokens, stopping at <|endoftext|>) and writes
OUT/test-responses.json (each test entry with its `model_response`), OUT/metrics.jsonl,
OUT/loss.png, checkpoints (rerun to continue) and the model in OUT/model (LoRA merged; adapters in
OUT/peft). Score the answers with `python -m train.judge OUT/test-responses.json`.

`--template chatml` reads conversations in OpenAI's messages format (JSONL, one
`{"messages": [{"role", "content"}, ...]}` per line), adds <|im_start|> and <|im_end|> to the
tokenizer (the embeddings grow, new rows at the mean of the old; OUT/model/task.json records
it), learns the assistant turns only, and answers each test conversation's last turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptjax.data import chat, instruct
from gptjax.options import parse, run_cli
from gptjax.store import Model
from gptjax.tasks.instruct import Instruct, Options, write_answers
from train.options import script_main

__all__ = ["Instruct", "Options", "main"]


@dataclass(frozen=True)
class Answer:
    ckpt: str = "runs/default"
    """an instruct run or an instruction-tuned model folder"""
    data: str = "instruction-data"
    """records whose test split is answered"""
    train_ratio: float = 0.85
    """as in training: records before the test split"""
    test_ratio: float = 0.1
    """as in training: the test split's fraction"""
    answer_batch: int = 8
    """prompts answered together"""
    max_new_tokens: int = 256
    """longest answer"""
    out: str | None = None
    """output file (unset: test-responses.json beside the run)"""


def answer_main(argv) -> None:
    opts = parse(Answer, argv, "answer the test split with a trained model")
    run, model = Path(opts.ckpt), Model.open(opts.ckpt)
    chats = chat.template_of(model.task) == "chatml"
    records = (chat.load_conversations if chats else instruct.load_entries)(opts.data)
    entries = instruct.split(records, opts.train_ratio, opts.test_ratio)["test"]
    out = Path(opts.out) if opts.out else run / "test-responses.json"
    write_answers(model, entries, out, opts.answer_batch, opts.max_new_tokens)


def main(argv=None) -> None:
    script_main(Options, Instruct, argv, __doc__, "train.instruct", {"answer": answer_main})


if __name__ == "__main__":
    run_cli(main)
