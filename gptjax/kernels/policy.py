"""Which code runs at each hot spot of a step: one frozen record, resolved once.

The model and the train step read a `Kernels` record instead of asking the process which
backend it runs on, so what runs is a visible choice: a run's config.json records it, its first
log line names it, `bench --json` rows carry it, and `--kernels head=padded,attention=xla`
overrides any field. `resolve` makes it from the devices a step will run on and the compute
dtype; it is the only place under gptjax/ that looks at the devices' platform or the CPU's
flags to pick code.

The hot spots and their implementations:
- `dense`: "xla" (flax's dot), or "cpu-bf16" (`cpu.dense`: every dot on XLA's bf16 kernel,
  float32 weight gradients; for CPUs with AMX).
- `head`: the output head's product and whether the vocabulary is padded to a multiple of
  128 for a matmul of many rows: "padded" (XLA's product, padded: GPUs, TPUs), "unpadded"
  (XLA's product), "cpu" (`cpu.head`, unpadded, its weight gradient in the cheaper
  orientation: float32 on CPUs), "cpu-padded" (`cpu.head`, padded: bf16 on AMX).
- `attention`: "reference" (the readable einsums), "xla" (XLA's fused kernel), "cudnn"
  (cuDNN's flash attention), "pallas" (the platform's Pallas kernel: Triton on a GPU,
  interpreted on a CPU, flash on a TPU), "cpu-bf16" (`cpu.attention`, for CPUs with AMX).
- `ce_budget`: bytes of float32 logits one slice of the cross entropy may hold (1 GiB, a
  memory bound; 32 MiB, a cache bound, for bf16 on AMX, where slicing is a speed-up).
- `fence`: "cpu" (`fence.gradient_fence` stores the residual stream's gradient once per
  block; XLA's CPU fusion would re-add it) or "none".
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from gptjax.accelerator import cpu_flags
from gptjax.errors import first_line

PLATFORMS = ("cpu", "gpu", "tpu")
ANY = PLATFORMS
# field -> {implementation: the platforms it runs on}
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "dense": {"xla": ANY, "cpu-bf16": ("cpu",)},
    "head": {"padded": ANY, "unpadded": ANY, "cpu": ("cpu",), "cpu-padded": ("cpu",)},
    "attention": {
        "reference": ANY,
        "xla": ANY,
        "cudnn": ("gpu",),
        "pallas": ANY,
        "cpu-bf16": ("cpu",),
    },
    "fence": {"cpu": ("cpu",), "none": ANY},
}
ATTENTION = ("auto", *CHOICES["attention"])  # what --attention takes
MiB, GiB = 2**20, 2**30


@dataclass(frozen=True)
class Kernels:
    """The implementation each hot spot runs (see the module's docstring), for `platform`'s
    devices. The defaults are GPT-2's readable reference on any device."""

    platform: str = "cpu"
    dense: str = "xla"
    head: str = "unpadded"
    attention: str = "reference"
    ce_budget: int = GiB
    fence: str = "none"
    note: str = dataclasses.field(default="", compare=False)  # a remark for the log line

    def __post_init__(self):
        if self.platform not in PLATFORMS:
            raise ValueError(
                f"kernels: unknown platform {self.platform!r}; expected one of: "
                f"{', '.join(PLATFORMS)}"
            )
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            here = ", ".join(c for c, where in choices.items() if self.platform in where)
            if value not in choices:
                raise ValueError(f"kernels: unknown {name}={value!r}; choices: {here}")
            if self.platform not in choices[value]:
                raise ValueError(
                    f"kernels: {name}={value} cannot run on {self.platform}; choices there: {here}"
                )
        if self.ce_budget <= 0:
            raise ValueError(f"kernels: ce_budget={self.ce_budget} must be a positive byte count")

    def to_dict(self) -> dict:
        """The record as config.json and bench rows carry it (the note left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "note"}

    def describe(self) -> str:
        """e.g. "dense=xla head=cpu attention=reference ce_budget=1GiB fence=cpu (cpu)"."""
        fields = {**self.to_dict(), "ce_budget": show_bytes(self.ce_budget)}
        platform = fields.pop("platform")
        line = " ".join(f"{k}={v}" for k, v in fields.items()) + f" ({platform})"
        return f"{line}; {self.note}" if self.note else line


def show_bytes(n: int) -> str:
    """1073741824 -> "1GiB", 33554432 -> "32MiB", else the count."""
    for unit, size in (("GiB", GiB), ("MiB", MiB)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def parse_bytes(text: str) -> int:
    """ "32MiB", "1GiB" or a plain count -> bytes; a bad one names what was expected."""
    match = re.fullmatch(r"\s*(\d+)\s*(GiB|MiB|KiB)?\s*", text)
    if not match:
        raise ValueError(f"kernels: ce_budget={text!r}: expected bytes, e.g. 33554432 or 32MiB")
    unit = {"GiB": GiB, "MiB": MiB, "KiB": 1024, None: 1}[match.group(2)]
    return int(match.group(1)) * unit


def platform_of(devices) -> str:
    """The platform of `devices` ("cpu", "gpu" or "tpu"); they must share one."""
    platforms = sorted({d.platform for d in devices})
    if len(platforms) != 1:
        raise ValueError(f"kernels: the devices span several platforms ({', '.join(platforms)})")
    return "gpu" if platforms[0] in ("cuda", "rocm") else platforms[0]


def auto_dtype(devices=None):
    """The compute dtype "auto" means on `devices` (default: jax.devices()): bfloat16 on GPUs
    and TPUs, float32 on CPUs (bf16 is faster only on those with AMX, and a run's figures
    should not depend on which CPU it met)."""
    platform = platform_of(devices if devices is not None else jax.devices())
    return jnp.float32 if platform == "cpu" else jnp.bfloat16


def defaults(platform: str, dtype, flags: frozenset[str] = frozenset(), cudnn=None) -> Kernels:
    """The fastest measured choice for `dtype` on `platform`, a pure function of its inputs:
    `flags` the CPU's (/proc/cpuinfo), `cudnn` whether cuDNN attention works (a callable
    asked only on a GPU in a half dtype)."""
    half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
    if platform == "tpu":
        return Kernels("tpu", head="padded", attention="pallas")
    if platform == "gpu":
        attention = "cudnn" if half and cudnn is not None and cudnn() else "reference"
        return Kernels("gpu", head="padded", attention=attention)
    if jnp.dtype(dtype) == jnp.float32:
        return Kernels("cpu", head="cpu", fence="cpu")
    if jnp.dtype(dtype) == jnp.bfloat16 and "amx_bf16" in flags:  # measured on a Xeon
        bf16 = dict(dense="cpu-bf16", head="cpu-padded", attention="cpu-bf16")
        return Kernels("cpu", **bf16, ce_budget=32 * MiB, fence="cpu")
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    note = "" if native else "this CPU has no native bf16: bfloat16 runs slower than float32"
    return Kernels("cpu", head="padded", fence="cpu", note=note)


def override(kernels: Kernels, spec: str) -> Kernels:
    """`kernels` with the fields of `spec` ("head=padded,attention=xla") replaced; a field or
    value that is unknown, or cannot run on its platform, gets one line naming the choices."""
    changes: dict = {}
    fields = [*CHOICES, "ce_budget"]
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or name not in fields:
            raise ValueError(
                f"kernels: {item!r}: expected FIELD=VALUE with FIELD one of: {', '.join(fields)}"
            )
        changes[name] = parse_bytes(value) if name == "ce_budget" else value
    return dataclasses.replace(kernels, **changes) if changes else kernels


def resolve(devices=None, dtype=jnp.float32, spec: str = "", attention: str = "auto") -> Kernels:
    """The policy for a step on `devices` (default: jax.devices()) computing in `dtype`, with
    `spec`'s overrides (see `override`) and `attention` ("auto" or an implementation, as
    --attention takes it; "cudnn" in float32, which cuDNN lacks, means XLA's kernel)."""
    platform = platform_of(devices if devices is not None else jax.devices())
    flags = cpu_flags() if platform == "cpu" else frozenset()
    kernels = defaults(platform, dtype, flags, cudnn_works)
    if attention not in ATTENTION:
        raise ValueError(
            f"unknown attention implementation {attention!r}; expected one of: "
            f"{', '.join(ATTENTION)}"
        )
    half = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
    if attention != "auto":
        attention = "xla" if attention == "cudnn" and not half else attention
        kernels = dataclasses.replace(kernels, attention=attention)
    kernels = override(kernels, spec)
    if kernels.attention == "cudnn" and not half:  # cuDNN has no float32 kernel: XLA's
        kernels = dataclasses.replace(kernels, attention="xla")
    return kernels


@functools.cache
def cudnn_works() -> bool:
    """Whether cuDNN attention compiles and runs here (it fails on some CUDA 13 set-ups,
    jax-ml/jax#32430); asked once per process, and a failure is said on stderr."""
    try:
        q = jnp.ones((1, 128, 1, 64), jnp.bfloat16)
        f = lambda q: jax.nn.dot_product_attention(q, q, q, is_causal=True, implementation="cudnn")
        jax.block_until_ready(jax.grad(lambda q: f(q).astype(jnp.float32).sum())(q))
        return True
    except Exception as e:  # any failure means: use the reference path
        print(
            f"attention: cuDNN attention unavailable ({first_line(e)}); using XLA einsums",
            file=sys.stderr,
        )
        return False
