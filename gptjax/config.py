"""The GPT-2 architecture as one frozen dataclass, with OpenAI's four sizes in a literal table.

Beside GPT-2's shape it holds the switches of the modern recipe (the modded-nanogpt speedrun's
architecture): each defaults to GPT-2, so a config that sets none of them is GPT-2 exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2 model. V vocab_size, C context_length, D emb_dim, N n_heads, L n_layers."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = True
    tie_embeddings: bool = True
    # The modern recipe's switches (README, "The modern recipe"); the defaults are GPT-2's.
    position: str = "learned"  # "rotary": RoPE on queries and keys, no `wpe`
    rope_base: float = 10000.0  # rotary: the longest wavelength's base
    norm: str = "layernorm"  # "rmsnorm": scale only, no mean, no bias
    qk_norm: bool = False  # RMS-normalise each head's queries and keys
    activation: str = "gelu"  # "relu2": ReLU squared in the MLP
    logit_softcap: float | None = None  # c: logits become c tanh(z / c)
    window: int | None = None  # each query sees only its last `window` keys

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.emb_dim % self.n_heads:
            raise ValueError(
                f"GPTConfig.emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate!r}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"GPTConfig.{name} must be one of {', '.join(map(repr, allowed))}, "
                    f"got {getattr(self, name)!r}"
                )
        positive = {"rope_base": self.rope_base, "logit_softcap": self.logit_softcap}
        for name, value in {**positive, "window": self.window}.items():
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ValueError(f"GPTConfig.{name} must be positive, got {value!r}")
        if self.window is not None and not isinstance(self.window, int):
            raise ValueError(f"GPTConfig.window must be an integer, got {self.window!r}")
        if self.position == "rotary" and self.head_dim % 2:
            raise ValueError(
                f"GPTConfig: rotary positions need an even head width, not {self.head_dim}"
            )

    def switches(self) -> dict:
        """The fields where this config leaves GPT-2's architecture: {name: value}."""
        return {k: getattr(self, k) for k, v in GPT2_ARCH.items() if getattr(self, k) != v}

    @property
    def head_dim(self) -> int:
        """H, the width of one attention head."""
        return self.emb_dim // self.n_heads

    def fit(self, length: int | None, flag: str) -> int:
        """`length` tokens per row, or the whole context when None; a length the model has no
        positions for is refused, naming the `flag` that asked for it."""
        if length is None:
            return self.context_length
        if length > self.context_length:
            raise ValueError(f"{flag} {length} exceeds the model's context ({self.context_length})")
        return length

    @classmethod
    def preset(cls, name: str, **overrides) -> GPTConfig:
        """A named size: "124M", "355M", "774M", "1558M" (gpt2, gpt2-medium, ...), tiny, nano."""
        key = ALIASES.get(name, name)
        if key not in PRESETS:
            known = ", ".join([*PRESETS, *ALIASES])
            raise ValueError(f"unknown GPTConfig preset {name!r}; expected one of: {known}")
        return dataclasses.replace(cls(**PRESETS[key]), **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {', '.join(unknown)}")
        return cls(**d)


# OpenAI's released sizes (folder names as in gs://gpt-2/models), a tiny one for demos and
# notebooks, and a nano one for tests and smoke runs (GPT-2's vocabulary, little else).
PRESETS: dict[str, dict] = {
    "124M": dict(emb_dim=768, n_heads=12, n_layers=12),
    "355M": dict(emb_dim=1024, n_heads=16, n_layers=24),
    "774M": dict(emb_dim=1280, n_heads=20, n_layers=36),
    "1558M": dict(emb_dim=1600, n_heads=25, n_layers=48),
    "tiny": dict(context_length=256, emb_dim=128, n_heads=4, n_layers=4),
    "nano": dict(context_length=64, emb_dim=32, n_heads=2, n_layers=2),
}
ALIASES = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}

# Values each switch may take; the first is GPT-2's.
CHOICES: dict[str, tuple] = {
    "position": ("learned", "rotary"),
    "norm": ("layernorm", "rmsnorm"),
    "activation": ("gelu", "relu2"),
}
# GPT-2's architecture, switch by switch (`GPTConfig.switches` names those a config changes).
GPT2_ARCH = {
    "qkv_bias": True,
    "tie_embeddings": True,
    "position": "learned",
    "norm": "layernorm",
    "qk_norm": False,
    "activation": "gelu",
    "logit_softcap": None,
    "window": None,
}
