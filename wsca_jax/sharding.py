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
import socket
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import WscaInputError, require

AXIS = "replicates"


JOIN_TIMEOUT = 300.0        # seconds every process waits for the others to join (JAX's own default)


def _address(coordinator: str) -> tuple[str, int]:
    host, _, port = coordinator.rpartition(":")
    require(bool(host) and port.isdigit() and 0 < int(port) < 65536,
            f"--coordinator {coordinator}: expected HOST:PORT (port 1-65535)")
    return host.strip("[]"), int(port)


def _join_failed(coordinator: str, n: int, joined: set, timeout: float) -> str:
    missing = sorted(set(range(n)) - joined)
    return (f"--distributed: process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {n} did not "
            f"join the coordinator {coordinator} within {timeout:g} s (joined: {', '.join(map(str, sorted(joined)))}); "
            "start one command per process id 0 .. n-1 with the same --coordinator, or raise --join-timeout")


def _serve_join(coordinator: str, n: int, timeout: float) -> None:
    """Process 0: accept ``join <id>`` from processes 1 .. n-1 on the coordinator's port until all
    have joined or ``timeout`` passes, answer each ``go`` or the missing ids, then free the port
    for JAX's coordination service."""
    _, port = _address(coordinator)
    conns, joined = [], {0}
    deadline = time.monotonic() + timeout
    try:
        dual = socket.has_dualstack_ipv6()
        srv = socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET, dualstack_ipv6=dual)
    except OSError as e:
        raise WscaInputError(f"--coordinator {coordinator}: process 0 cannot listen on port {port} "
                             f"({e.strerror or type(e).__name__}); choose a free port") from None
    with srv:
        while len(joined) < n and time.monotonic() < deadline:
            srv.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                c, _ = srv.accept()
            except (socket.timeout, TimeoutError):
                break
            c.settimeout(10)
            try:
                pid = int(c.makefile().readline().split()[1])
            except (OSError, ValueError, IndexError):
                c.close()
                continue
            require(0 < pid < n and pid not in joined,
                    f"--distributed: process id {pid} joined the coordinator {coordinator} "
                    f"{'twice' if pid in joined else f'but --num-processes is {n}'}; give each process its own id 0 .. {n - 1}")
            joined.add(pid)
            conns.append(c)
    # the listening socket is closed before any answer: a peer told "go" connects to JAX's service,
    # never to a listener that is going away
    reply = "go" if len(joined) == n else "missing " + ",".join(map(str, sorted(joined)))
    for c in conns:
        with c:
            try:
                c.sendall((reply + "\n").encode())
                c.recv(1)              # the peer closes first: no TIME_WAIT on process 0's side of the port
            except OSError:
                pass
    require(len(joined) == n, _join_failed(coordinator, n, joined, timeout))


def _join(coordinator: str, n: int, pid: int, timeout: float) -> None:
    """Process ``pid`` > 0: reach process 0 on the coordinator's port within ``timeout``, say
    ``join <pid>``, and wait for its answer (``go``, or the ids that joined)."""
    host, port = _address(coordinator)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = socket.create_connection((host, port), timeout=2)
            break
        except OSError:
            require(time.monotonic() < deadline,
                    f"--distributed: process {pid} could not reach the coordinator {coordinator} (process 0) within "
                    f"{timeout:g} s; start process 0 there, check the address, or raise --join-timeout")
            time.sleep(0.2)
    with s:
        s.sendall(f"join {pid}\n".encode())
        s.settimeout(timeout + 30)
        try:
            reply = s.makefile().readline().strip()
        except OSError:
            reply = ""
    if reply != "go":
        joined = {int(i) for i in reply.split()[1].split(",")} if reply.startswith("missing ") else set()
        require(False, _join_failed(coordinator, n, joined, timeout) if joined else
                f"--distributed: the coordinator {coordinator} ended the start-up without an answer to process {pid}")


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               join_timeout: float = JOIN_TIMEOUT) -> None:
    """Join JAX's distributed runtime (``jax.distributed.initialize``) once per process.

    With no arguments the cluster is detected from the environment (SLURM, TPU pods, Open MPI) or
    from ``WSCA_COORDINATOR`` / ``WSCA_NUM_PROCESSES`` / ``WSCA_PROCESS_ID``. On CPU the collectives
    use gloo. Must be called before any computation.

    Where the coordinator, process count and id are given, the processes first meet on the
    coordinator's port (:func:`_serve_join`, :func:`_join`): a process that does not come within
    ``join_timeout`` seconds is one line naming the coordinator and the missing process ids, on
    every process that came (JAX's runtime would abort the process natively at its deadline).
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
    if coordinator and num_processes and process_id is not None and num_processes > 1:
        require(0 <= process_id < num_processes,
                f"--process-id must be 0 .. {num_processes - 1} (--num-processes {num_processes}), found {process_id}")
        (_serve_join(coordinator, num_processes, join_timeout) if process_id == 0 else
         _join(coordinator, num_processes, process_id, join_timeout))
        kw["initialization_timeout"] = int(max(60, join_timeout))
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
