"""Replicate-axis sharding over devices and processes (issue 13).

The probe engine's unit of work is a chunk of ``R`` replicates (bootstrap draws, permutations,
folds) x the ``T`` tasks of one class width, fitted in one compiled call
(:func:`wsca_jax.probes.fit_batched`). Here that replicate axis is laid out on a one-axis
:class:`jax.sharding.Mesh` over every device JAX sees -- the local devices of this process, or,
after :func:`initialize` (JAX's distributed runtime), the devices of every process -- while the
embeddings and the preconditioner are replicated. ``jax.jit`` partitions the vmapped solver along
that axis; its lock-step loop condition ("every problem done") becomes a cross-device reduction, so
a sharded run iterates exactly like a single-device one and gives the same fits (to float32 rounding
of differently blocked matrix products) -- when the device count divides the chunk; otherwise
:func:`chunk_size` rounds the chunk up and the replicates are grouped differently (fits then agree
to the solver tolerance).

Multi-process: every process runs the same program on the same inputs (seeds make the replicate
weights identical everywhere) and builds each global array from its own shards
(``jax.make_array_from_callback``), so each process owns and computes its share of the replicates;
results are gathered to every process (``process_allgather``) and process 0 writes the outputs.

Functions are no-ops on one device: ``mesh()`` is None and arrays stay as they are.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import require

AXIS = "replicates"


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Join JAX's distributed runtime (``jax.distributed.initialize``) once per process.

    With no arguments the cluster is detected from the environment (SLURM, TPU pods, Open MPI) or
    from ``WSCA_COORDINATOR`` / ``WSCA_NUM_PROCESSES`` / ``WSCA_PROCESS_ID``. On CPU the collectives
    use gloo. Must be called before any computation.
    """
    env = os.environ
    coordinator = coordinator or env.get("WSCA_COORDINATOR")
    if num_processes is None and env.get("WSCA_NUM_PROCESSES"):
        num_processes = int(env["WSCA_NUM_PROCESSES"])
    if process_id is None and env.get("WSCA_PROCESS_ID"):
        process_id = int(env["WSCA_PROCESS_ID"])
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 -- option absent in a JAX without CPU collectives: GPUs/TPUs need none
        pass
    kw = {k: v for k, v in dict(coordinator_address=coordinator, num_processes=num_processes,
                                process_id=process_id).items() if v is not None}
    try:
        jax.distributed.initialize(**kw)
    except (RuntimeError, ValueError) as e:
        require(False, f"--distributed: JAX's distributed runtime did not start ({str(e).splitlines()[0][:200]}); "
                       "set the coordinator, number of processes and process id (WSCA_COORDINATOR, "
                       "WSCA_NUM_PROCESSES, WSCA_PROCESS_ID) or run under SLURM / on a TPU pod")


def is_main() -> bool:
    """True on the process that writes outputs (process 0; always True in one process)."""
    return jax.process_index() == 0


def mesh() -> Mesh | None:
    """A one-axis mesh over every device (all processes), or None when there is one device."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    return Mesh(np.asarray(devices), (AXIS,))


def chunk_size(chunk: int, m: Mesh | None) -> int:
    """Replicates per compiled call: ``chunk`` rounded up to a multiple of the device count."""
    if m is None:
        return chunk
    n = m.devices.size
    return int(-(-max(1, chunk) // n) * n)


def put(array, m: Mesh | None, sharded: bool):
    """``array`` (the same NumPy value on every process) as a global array: split along axis 0
    over the mesh (``sharded``) or replicated; unchanged without a mesh. Each process provides only
    the shards its own devices hold."""
    if m is None:
        return array
    a = np.asarray(array)
    spec = PartitionSpec(AXIS) if sharded else PartitionSpec()
    return jax.make_array_from_callback(a.shape, NamedSharding(m, spec), lambda idx: a[idx])


def put_tree(tree, m: Mesh | None, sharded: bool):
    """:func:`put` on every leaf of a pytree (None leaves stay None)."""
    if m is None:
        return tree
    return jax.tree_util.tree_map(lambda a: put(a, m, sharded), tree)


def agree_min(value: float) -> float:
    """The smallest ``value`` over all processes (the value itself in one process)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    return float(np.min(multihost_utils.process_allgather(np.float64(value))))


def gather(tree):
    """Every leaf as a NumPy array holding the global value, on every process."""
    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)
    return jax.tree_util.tree_map(one, tree)
