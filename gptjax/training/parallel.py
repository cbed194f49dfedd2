"""Data parallelism on every device, one host or many.

Default: `jax.jit` over a 1-D device Mesh ("data"): the batch is split over devices, params and
optimizer state are replicated, or sharded FSDP-style (each >= 2-D tensor split along its
largest divisible axis). XLA inserts the gradient all-reduce. The classic alternative is
`jax.pmap` with an explicit `psum` (see `make_train_step(axis_name=...)`).

Shapes: B global batch, P processes, L local devices.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gptjax import accelerator
from gptjax.kernels.policy import auto_dtype

AXIS = "data"


def init_distributed(coordinator: str | None, num_processes: int | None, process_id: int | None):
    """Join a multi-process run (JAX's own runtime) when flags or environment variables ask for it.

    Flags win; otherwise JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID are read
    (and on TPU pods or SLURM, jax.distributed finds everything by itself). CPU processes talk
    through gloo.
    """
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator is None and num_processes is None:
        return
    # Only the CPU backend reads this; GPU and TPU bring their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    env = lambda name: int(os.environ[name]) if name in os.environ else None
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes if num_processes is not None else env("JAX_NUM_PROCESSES"),
        process_id=process_id if process_id is not None else env("JAX_PROCESS_ID"),
    )


def describe_devices(software: bool = False) -> str:
    """e.g. "8 x NVIDIA H100 80GB HBM3 (gpu), 1 process" or "1 x cpu (cpu), 1 process"; with
    `software`, then the jax / jaxlib / plugin versions and whether the scatter-add workaround
    is on (`gptjax.accelerator`)."""
    kinds: dict[str, int] = {}
    for d in jax.devices():
        name = f"{d.device_kind} ({d.platform})"
        kinds[name] = kinds.get(name, 0) + 1
    procs = jax.process_count()
    shown = ", ".join(f"{n} x {k}" for k, n in kinds.items())
    line = f"{shown}, {procs} process{'es' if procs > 1 else ''}"
    if software:
        line += " | " + accelerator.describe(accelerator.SCATTER_WORKAROUND)
    return line


DTYPES = ("auto", "float32", "bfloat16")  # what --dtype takes


def compute_dtype(name: str):
    """The compute dtype a `--dtype` names; "auto": bfloat16 on GPUs and TPUs (parameters stay
    float32, see `model.GPT`), float32 on CPUs (`kernels.policy.auto_dtype`)."""
    return auto_dtype() if name == "auto" else jnp.dtype(name)


def make_mesh(devices=None) -> Mesh:
    """`devices` (default: all devices of all processes) on one "data" axis."""
    return Mesh(np.array(jax.devices() if devices is None else devices), (AXIS,))


def fsdp_spec(shape: tuple[int, ...], n: int) -> P:
    """Shard the largest axis divisible by n; small or indivisible tensors stay replicated."""
    if len(shape) < 2:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            return P(*[AXIS if a == axis else None for a in range(len(shape))])
    return P()


def state_shardings(mesh: Mesh, state, *, fsdp: bool):
    """NamedShardings for every leaf of a (possibly abstract) train state."""
    n = mesh.devices.size
    spec = lambda x: fsdp_spec(x.shape, n) if fsdp else P()
    return jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def local_rows(B: int) -> slice:
    """This process's rows of a global batch of B: each process reads only its own slice."""
    P_, p = jax.process_count(), jax.process_index()
    if B % P_:
        raise ValueError(f"batch size {B} must be divisible by the number of processes ({P_})")
    return slice(p * B // P_, (p + 1) * B // P_)


def global_batch(mesh: Mesh, local: dict[str, np.ndarray], B: int) -> dict[str, jax.Array]:
    """Assemble the global [B, T] arrays from each process's local rows."""
    n = mesh.devices.size
    if B % n:
        raise ValueError(f"batch size {B} must be divisible by the number of devices ({n})")
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, v, (B, *v.shape[1:]))
        for k, v in local.items()
    }


def replicate(tree):
    """pmap layout: a leading axis of one copy per local device."""
    mesh = make_mesh(jax.local_devices())
    copies = lambda x: jnp.broadcast_to(jnp.asarray(x), (mesh.size, *jnp.shape(x)))
    return jax.device_put(jax.tree.map(copies, tree), NamedSharding(mesh, P(AXIS)))


def unreplicate(tree):
    """pmap layout -> one copy, replicated over the same local devices: the first device's
    copy, copied to the others. Not `x[0]`: indexing the device axis is a program over every
    device with a collective, one per leaf at each eval and checkpoint, and with 8 host devices
    XLA's CPU client once hung in one (7 devices waiting in the all-reduce for the eighth)."""
    everywhere = NamedSharding(make_mesh(jax.local_devices()), P())

    def first(x):
        copy = x.addressable_shards[0].data  # [1, ...] on one device
        return jax.device_put(copy.reshape(x.shape[1:]), everywhere)

    return jax.tree.map(first, tree)


def split_for_pmap(local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """[B_local, T] -> [L, B_local / L, T] for pmap over the L local devices."""
    L = jax.local_device_count()
    if len(local["inputs"]) % L:
        raise ValueError(
            f"local batch {len(local['inputs'])} must be divisible by the {L} local devices"
        )
    return {k: v.reshape(L, -1, *v.shape[1:]) for k, v in local.items()}
