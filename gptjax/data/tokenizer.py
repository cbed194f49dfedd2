"""Tokenizers: OpenAI's GPT-2 BPE (through tiktoken, offline) and the book's word-level one."""

from __future__ import annotations

import codecs
import functools
import re
from pathlib import Path

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

from gptjax.data.cache import FILES, fetch
from gptjax.data.download import DownloadError, check_file

ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256


def gpt2(model_dir: str | Path | None = None) -> tiktoken.Encoding:
    """GPT-2's BPE as a tiktoken Encoding, identical to tiktoken's own "gpt2" encoding.

    The two files (`encoder.json`, `vocab.bpe`) come from `model_dir` (any OpenAI GPT-2 model
    folder) or else from the cache, so no network is needed once they are there. Encode
    `<|endoftext|>` as 50256 with `enc.encode(text, allowed_special={"<|endoftext|>"})`. Built
    once per pair of files in a process (it parses 50,000 merges, a fifth of a second).
    """
    if model_dir is None:
        files = bpe_files()
    else:
        files = [Path(model_dir).absolute() / name for name in ("encoder.json", "vocab.bpe")]
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing GPT-2 tokenizer file")
    # The files' size and time stand for their bytes: a file changed on disk is read again.
    stats = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])
    return _gpt2(stats)


@functools.cache
def _gpt2(stats: tuple) -> tiktoken.Encoding:
    (encoder, _, _), (vocab, _, _) = stats
    for path, key in ((encoder, "gpt2-bpe/encoder.json"), (vocab, "gpt2-bpe/vocab.bpe")):
        try:
            check_file(Path(path), sha256=FILES[key].sha256)
        except DownloadError as e:
            raise ValueError(f"{e} (not GPT-2's {Path(path).name})") from None
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=vocab, encoder_json_file=encoder
    )
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=50257,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
    )


def bpe_files() -> list[Path]:
    """GPT-2's `encoder.json` and `vocab.bpe`, from the cache (fetched once)."""
    return [fetch("gpt2-bpe/encoder.json"), fetch("gpt2-bpe/vocab.bpe")]


def encode(enc, text: str) -> list[int]:
    """A text's ids, with <|endoftext|> written in it read as the special token (as
    transformers' GPT-2 tokenizer and vLLM read it)."""
    return enc.encode(text, allowed_special={ENDOFTEXT})


def hf_tokenizer_config(context: int, *, pad: bool = False) -> dict:
    """GPT-2's `tokenizer_config.json` as transformers writes it: <|endoftext|> as bos, eos and
    unk (and pad with `pad`), no token added in front, `model_max_length` = context."""
    special = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT}
    special |= {"pad_token": ENDOFTEXT} if pad else {}
    added = {"content": ENDOFTEXT, "lstrip": False, "normalized": True, "rstrip": False}
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": context,
        "add_prefix_space": False,
        "add_bos_token": False,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(EOT_ID): {**added, "single_word": False, "special": True}},
        **special,
    }


def has_eot(vocab_size: int) -> bool:
    """Whether a model of `vocab_size` rows has one for <|endoftext|>, the last of GPT-2's
    tokenizer (toy models in tests and notebooks have fewer)."""
    return vocab_size > EOT_ID


def check_vocab(vocab_size: int, source: str) -> None:
    """A model must have a row for every GPT-2 token id it will be fed."""
    if not has_eot(vocab_size):
        raise ValueError(
            f"{source}: the model's vocabulary ({vocab_size}) is smaller than "
            f"GPT-2's tokenizer ({EOT_ID + 1})"
        )


class SimpleTokenizer:
    """The book's word-level tokenizer: split on punctuation and whitespace, map words to ids.

    Words not in the vocabulary become `<|unk|>`; `<|endoftext|>` separates documents.
    """

    SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
    UNK = "<|unk|>"

    def __init__(self, vocab: dict[str, int]):
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in vocab.items()}

    @classmethod
    def from_text(cls, text: str) -> SimpleTokenizer:
        """Vocabulary of every word in `text` (sorted), plus `<|endoftext|>` and `<|unk|>`."""
        words = sorted(set(cls.split(text)))
        return cls({w: i for i, w in enumerate([*words, ENDOFTEXT, cls.UNK])})

    @classmethod
    def split(cls, text: str) -> list[str]:
        return [t.strip() for t in cls.SPLIT.split(text) if t.strip()]

    def encode(self, text: str) -> list[int]:
        unk = self.str_to_int[self.UNK]
        return [self.str_to_int.get(t, unk) for t in self.split(text)]

    def decode(self, ids: list[int]) -> str:
        text = " ".join(self.int_to_str[i] for i in ids)
        # Undo the spaces that joining put before punctuation.
        return re.sub(r'\s+([,.:;?!"()\'])', r"\1", text)


class Detokenizer:
    """Token ids -> text deltas: whole UTF-8 characters only, cut at the first stop string, and
    holding back the tail that could still become a stop string."""

    def __init__(self, enc, stop: tuple[str, ...] = ()):
        self.enc, self.stop = enc, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent = "", 0

    def push(self, token: int) -> tuple[str, bool]:
        """(new text safe to send, whether a stop string ended the answer)."""
        if token < self.enc.n_vocab:  # ids past the tokenizer's (a padded vocab) print nothing
            self.text += self.utf8.decode(self.enc.decode_single_token_bytes(token))
        cut = min((i for s in self.stop if (i := self.text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            return self._send(len(self.text)), True
        return self._send(max(self.sent, len(self.text) - self.hold)), False

    def flush(self) -> str:
        self.text += self.utf8.decode(b"", final=True)
        return self._send(len(self.text))

    def _send(self, upto: int) -> str:
        delta, self.sent = self.text[self.sent : upto], max(self.sent, upto)
        return delta
