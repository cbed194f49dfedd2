"""Train a byte-level BPE tokenizer of your own (GPT-2's pre-tokenizer rules, <|endoftext|>).

    python -m train.tokenizer --data ../shared/data/python-docs --vocab-size 8192 --out runs/tok
    python -m train.tokenizer --data the-verdict --vocab-size 1024 --out runs/tok-verdict

trains on all but the held-out documents (--held-out; a single text: its tail), then prints
`tokenizer: V tokens in OUT` and the bytes per token on the held-out text beside GPT-2's, e.g.
`held-out bytes/token: 4.61 (this) vs 3.98 (GPT-2)`. OUT loads in tiktoken (`gptjax.data.bpe.
load`) and in transformers (`AutoTokenizer.from_pretrained(OUT)`), identically. Use it with
`python -m train.pretrain --tokenizer OUT` (or `train.prepare --tokenizer OUT`); every later
step (generate, serve, instruct, rl, export-hf) finds it in the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gptjax.data import bpe, documents, tokenizer
from gptjax.options import parse, run_cli


@dataclass(frozen=True)
class Options:
    data: str = "the-verdict"
    """the-verdict, a .txt / .jsonl(.gz) / .parquet file, or a folder of them"""
    vocab_size: int = 8192
    """tokens in all: 256 bytes, the merges, and <|endoftext|>"""
    out: str = "runs/tokenizer"
    """the tokenizer folder to write"""
    held_out: float = 0.05
    """fraction of the documents (of a single text: its tail) kept out of training"""
    text_field: str = "text"
    """field or column holding the text (.jsonl, .parquet)"""
    context_length: int = 1024
    """model_max_length recorded for transformers"""


def texts(opts: Options) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents)."""
    if not 0.0 <= opts.held_out < 1.0:
        raise ValueError(f"--held-out must be in [0, 1), got {opts.held_out}")
    files = documents.source_files(opts.data)
    docs = [d for d in documents.documents(files, opts.text_field) if d]
    if not docs:
        raise ValueError(f"{opts.data}: no text to train a tokenizer on")
    if len(docs) == 1:  # one text: hold out its tail
        cut = int(len(docs[0]) * (1 - opts.held_out))
        return [docs[0][:cut]], [docs[0][cut:]] if opts.held_out else []
    n = round(len(docs) * opts.held_out)
    return docs[: len(docs) - n], docs[len(docs) - n :]


def main(argv=None) -> None:
    opts = parse(Options, argv, __doc__)
    train_docs, held = texts(opts)
    start = time.perf_counter()
    enc = bpe.train(train_docs, opts.vocab_size, progress=True)
    seconds = time.perf_counter() - start
    sample = "".join(held)
    fit = {}
    if sample:
        fit = {"this": bpe.bytes_per_token(enc, sample)}
        fit["gpt2"] = bpe.bytes_per_token(tokenizer.gpt2(), sample)
    about = {"trained_on": str(opts.data), "held_out_bytes_per_token": fit}
    out = bpe.save(enc, opts.out, context=opts.context_length, about=about)
    print(f"tokenizer: {enc.n_vocab} tokens in {out} (trained in {seconds:.1f} s)")
    if fit:
        print(
            f"held-out bytes/token: {fit['this']:.2f} (this) vs {fit['gpt2']:.2f} (GPT-2), "
            f"on {len(sample.encode()):,} bytes"
        )
    else:
        print("held-out bytes/token: no held-out text (--held-out 0)")


if __name__ == "__main__":
    run_cli(main)
