"""Download GPT-2 weights: OpenAI's seven files per size (with a fallback mirror), or the Hugging
Face `openai-community/gpt2*` safetensors. Each file resumes, is size- and (where known)
sha256-checked, and only gets its final name once complete."""

from __future__ import annotations

from pathlib import Path

from gptjax.data.cache import FILES, cache_dir
from gptjax.data.download import download

SIZES = ("124M", "355M", "774M", "1558M")
OPENAI_MIRRORS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",
)
OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
HF_URL = "https://huggingface.co"
HF_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
HF_FILES = ("config.json", "model.safetensors")
# The BPE files are the same in every size's folder.
KNOWN_SHA256 = {
    "encoder.json": FILES["gpt2-bpe/encoder.json"].sha256,
    "vocab.bpe": FILES["gpt2-bpe/vocab.bpe"].sha256,
}


def download_model(
    size: str,
    dest: str | Path | None = None,
    *,
    source: str = "openai",
    mirrors: tuple[str, ...] | None = None,
    progress: bool = True,
) -> Path:
    """Download GPT-2 `size` into `dest` (default: the cache's models/ folder); return it."""
    if size not in SIZES:
        raise ValueError(f"unknown GPT-2 size {size!r}; expected one of: {', '.join(SIZES)}")
    if source not in ("openai", "hf"):
        raise ValueError(f"unknown source {source!r}; expected openai or hf")
    folder = (
        Path(dest)
        if dest
        else cache_dir() / "models" / (size if source == "openai" else f"hf-{size}")
    )
    if source == "openai":
        bases = [f"{m.rstrip('/')}/{size}" for m in (mirrors or OPENAI_MIRRORS)]
        names = OPENAI_FILES
    else:
        bases = [f"{m.rstrip('/')}/{HF_REPOS[size]}/resolve/main" for m in (mirrors or (HF_URL,))]
        names = HF_FILES
    for name in names:
        if not (folder / name).exists():
            download(
                [f"{b}/{name}" for b in bases],
                folder / name,
                sha256=KNOWN_SHA256.get(name),
                progress=progress,
            )
    return folder
