"""A byte-level BPE of your own: trained with Hugging Face `tokenizers` under GPT-2's
pre-tokenizer rules, saved as one folder that tiktoken (for speed) and transformers'
`AutoTokenizer` (for everyone else) both load and encode identically.

    DIR/gptjax-tokenizer.json   name, pre-tokenizer pattern, special tokens (id for each)
    DIR/tokenizer.tiktoken      the merge ranks, tiktoken's own format (base64 token, rank)
    DIR/tokenizer.json          the same BPE for transformers (PreTrainedTokenizerFast)
    DIR/tokenizer_config.json   <|endoftext|> as bos/eos/unk; `chat_template` for chat models

The token ids of a merged token are its rank, as in GPT-2; `<|endoftext|>` follows the merges
and chat tokens (`<|im_start|>`, `<|im_end|>`) follow it. tokenizer.json's merges are every
split of each token into two tokens, ordered by the merged token's rank, so Hugging Face's BPE
merges exactly what tiktoken's does (the construction of transformers' TikTokenConverter).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

from gptjax.data.tokenizer import ENDOFTEXT, EOT_ID, hf_tokenizer_config
from gptjax.files import atomic_dir, write_json

META = "gptjax-tokenizer.json"
RANKS = "tokenizer.tiktoken"
HF = "tokenizer.json"
HF_CONFIG = "tokenizer_config.json"
MAX_VOCAB = 1 << 16  # token files hold uint16 ids


def is_tokenizer_dir(directory: str | Path) -> bool:
    return (Path(directory) / META).is_file()


def train(texts: Iterable[str], vocab_size: int, *, progress: bool = False) -> tiktoken.Encoding:
    """A byte-level BPE of `vocab_size` tokens (the 256 bytes, merges, `<|endoftext|>` last)
    learned from `texts` by Hugging Face `tokenizers`, as a tiktoken Encoding. A small corpus
    may stop short of `vocab_size` (no pair left to merge)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if not 257 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size must be in 258..{MAX_VOCAB}, got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # room for <|endoftext|>
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=progress,
    )
    bpe.train_from_iterator(texts, trainer)
    decode = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(decode[c] for c in s): i for s, i in bpe.get_vocab().items()}
    return encoding("bpe", ranks, {ENDOFTEXT: len(ranks)})


def encoding(
    name: str, ranks: dict[bytes, int], special: dict[str, int], pat_str: str = r50k_pat_str
) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special
    )


def with_specials(enc: tiktoken.Encoding, names: Iterable[str]) -> tiktoken.Encoding:
    """`enc` with the special tokens among `names` it lacks appended after its last id."""
    special = dict(enc._special_tokens)
    for name in names:
        if name not in special:
            special[name] = enc.n_vocab + len(special) - len(enc._special_tokens)
    return encoding(enc.name, enc._mergeable_ranks, special, enc._pat_str)


def save(enc: tiktoken.Encoding, directory: str | Path, **kw) -> Path:
    """Write `enc` as a tokenizer folder (see the module's docstring), whole or not at all;
    keywords as `write_files`."""
    directory = Path(directory).absolute()
    with atomic_dir(directory) as tmp:
        write_files(enc, tmp, **kw)
    return directory


def keep(enc: tiktoken.Encoding, directory: str | Path, **kw) -> Path:
    """A run's or a shard folder's copy of its tokenizer: saved once, left as it is after (a
    resumed run checks its fingerprint instead)."""
    if not is_tokenizer_dir(directory):
        save(enc, directory, **kw)
    return Path(directory)


def write_files(
    enc: tiktoken.Encoding,
    folder: Path,
    *,
    context: int = 1024,
    chat_template: str | None = None,
    about: dict | None = None,
) -> None:
    """The tokenizer's four files into `folder` (a model folder being written, or its own):
    `chat_template` (jinja) goes into tokenizer_config.json for transformers; `about` (what it
    was trained on) into gptjax-tokenizer.json."""
    ranks = sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
    lines = (f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks)
    (folder / RANKS).write_text("".join(lines))
    meta = {
        "name": enc.name,
        "pat_str": enc._pat_str,
        "special_tokens": enc._special_tokens,
        "n_vocab": enc.n_vocab,
        **(about or {}),
    }
    write_json(folder / META, meta)
    hf_tokenizer(enc).save(str(folder / HF))
    write_json(folder / HF_CONFIG, hf_config(enc, context, chat_template))


def hf_tokenizer(enc: tiktoken.Encoding):
    """`enc` as a `tokenizers.Tokenizer` that encodes every text to the same ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    ranks, to_str = enc._mergeable_ranks, bytes_to_unicode()
    text = lambda b: "".join(to_str[x] for x in b)
    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], text(left), text(right)))
    merges.sort()
    vocab = {text(t): r for t, r in ranks.items()}
    model = models.BPE(vocab, [(a, b) for *_, a, b in merges], ignore_merges=True)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(enc._pat_str), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = sorted(enc._special_tokens.items(), key=lambda kv: kv[1])
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s, _ in specials])
    for s, i in specials:
        if tok.token_to_id(s) != i:
            raise ValueError(f"special token {s}: id {tok.token_to_id(s)}, expected {i}")
    return tok


def hf_config(enc: tiktoken.Encoding, context: int, chat_template: str | None) -> dict:
    """tokenizer_config.json for a PreTrainedTokenizerFast over tokenizer.json."""
    config = hf_tokenizer_config(context)
    added = config["added_tokens_decoder"][str(EOT_ID)]
    config["added_tokens_decoder"] = {
        str(i): {**added, "content": s, "normalized": False}
        for s, i in sorted(enc._special_tokens.items(), key=lambda kv: kv[1])
    }
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if chat_template:
        config["chat_template"] = chat_template
    return config


def load(directory: str | Path) -> tiktoken.Encoding:
    """The tokenizer a folder holds, as a tiktoken Encoding; a missing or damaged file is a
    one-line error naming it. Read once per version of the files in a process."""
    directory = Path(directory).absolute()
    files = (directory / META, directory / RANKS)
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing (not a tokenizer folder from train.tokenizer)"
            )
    return _load(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.cache
def _load(stats: tuple) -> tiktoken.Encoding:
    (meta_path, _, _), (ranks_path, _, _) = stats
    try:
        meta = json.loads(Path(meta_path).read_text())
        special = {str(k): int(v) for k, v in meta["special_tokens"].items()}
        ranks = {}
        # tiktoken's own reader caches by path, so a file rewritten in place would read stale.
        for line in Path(ranks_path).read_bytes().splitlines():
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        enc = encoding(str(meta["name"]), ranks, special, meta["pat_str"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as e:
        where = Path(meta_path).parent
        raise ValueError(f"{where}: not a readable tokenizer ({type(e).__name__}: {e})") from None
    if ENDOFTEXT not in special:
        raise ValueError(f"{meta_path}: special_tokens lacks {ENDOFTEXT}")
    return enc


def find(folder: str | Path | None) -> tiktoken.Encoding | None:
    """The tokenizer a model folder (its own files) or a run (OUT/tokenizer) records; None:
    GPT-2's."""
    if folder is None:
        return None
    for place in (Path(folder), Path(folder) / "tokenizer"):
        if is_tokenizer_dir(place):
            return load(place)
    return None


def check_fits(enc: tiktoken.Encoding, vocab_size: int, source: str) -> None:
    """A model needs a row for every id its tokenizer makes."""
    if enc.n_vocab > vocab_size:
        raise ValueError(
            f"{source}: the tokenizer has {enc.n_vocab} tokens but the model's vocabulary only "
            f"{vocab_size} rows; use the tokenizer the model was trained with"
        )


def fingerprint(enc: tiktoken.Encoding) -> dict:
    """What identifies a tokenizer in a run's checkpoints: its size and a hash of its ranks and
    special tokens (GPT-2's is {"name": "gpt2"})."""
    if is_gpt2(enc):
        return {"name": "gpt2"}
    h = hashlib.sha256()
    for t, r in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
        h.update(t + b"\0" + str(r).encode() + b"\n")
    h.update(json.dumps(enc._special_tokens, sort_keys=True).encode())
    return {"name": enc.name, "n_vocab": enc.n_vocab, "sha256": h.hexdigest()[:16]}


def is_gpt2(enc: tiktoken.Encoding) -> bool:
    return enc.name == "gpt2" and enc.n_vocab == EOT_ID + 1


def token_bytes(enc: tiktoken.Encoding, V: int | None = None) -> np.ndarray:
    """int32 [V]: each token's length in bytes of text (special tokens and rows past the
    tokenizer's: 0), for bits per byte."""
    out = np.zeros(V or enc.n_vocab, np.int32)
    for t, r in enc._mergeable_ranks.items():
        if r < len(out):
            out[r] = len(t)
    return out


def bytes_per_token(enc: tiktoken.Encoding, text: str) -> float:
    """Bytes of `text` per token when `enc` encodes it (higher: a better fit)."""
    return len(text.encode()) / max(1, len(enc.encode_ordinary(text)))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters (the alphabet of byte-level BPE)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))
