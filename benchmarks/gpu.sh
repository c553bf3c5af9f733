#!/usr/bin/env bash
# GPU benchmark for issue 13, ready to run on a machine with an NVIDIA GPU (CUDA 12 driver):
#   bash benchmarks/gpu.sh [OUT_DIR]
# 1. a virtual environment with the CUDA build of jax (pip wheels from the package index, or from a
#    local wheel folder given by PIP_FIND_LINKS on a machine without network; no CUDA toolkit needed),
# 2. the whole-process benchmark against the scikit-learn loop (the CPU-side baseline is
#    extrapolated from sampled fits, as on CPU),
# 3. the scaling sweeps (N, D, T, B),
# 4. the large point: N = 1,000,000, D = 2,048, 33 tasks (the binary primary + 16 binary + 16
#    four-class), B = 1,000 (fits only; embeddings 8 GB),
# writing JSON lines with achieved TFLOP/s and the fraction of the device's float32 peak measured
# in the same run (a large matmul), the device named in every record.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/gpu_results}"
mkdir -p "$OUT"
if [ ! -x .venv-gpu/bin/python ]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install -q --upgrade pip
  .venv-gpu/bin/pip install -q -e . "jax[cuda12]"
fi
PY=.venv-gpu/bin/python
$PY - <<'PYEOF'
import jax
assert jax.devices()[0].platform == "gpu", f"no GPU visible to JAX: {jax.devices()}"
print("devices:", jax.devices())
PYEOF
$PY benchmarks/analyze_whole.py --n 5000 --d 256 --boot 100 --no-figures --record "$OUT/analyze_whole.jsonl" | tee "$OUT/analyze_whole.log"
$PY benchmarks/probe_throughput.py --record "$OUT/probe_throughput.jsonl" | tee "$OUT/probe_realistic.log"
$PY benchmarks/scaling.py --record "$OUT/scaling.jsonl" | tee "$OUT/scaling.log"
$PY - "$OUT" <<'PYEOF'
# The large point: fits only (replicate chunks sized to the device memory), achieved TFLOP/s
# against the device's float32 matmul rate measured here.
import json, os, sys, time
import numpy as np, jax, jax.numpy as jnp
from wsca_jax.probes import ProbeConfig, fit_replicates, make_basis
from wsca_jax.stats import bootstrap_weights
out = sys.argv[1]
n, d, kinds, B = 1_000_000, 2048, [2] * 17 + [4] * 16, 1000
rng = np.random.default_rng(0)
spec = np.sqrt(1.0 / np.arange(1, d + 1))
z = np.empty((n, d), np.float32)
labels = np.zeros((len(kinds), n), np.int32)
betas = [rng.standard_normal((d, k)) * spec[:, None] for k in kinds]
for s in range(0, n, 50_000):
    lat = (rng.standard_normal((50_000, d)) * spec).astype(np.float32)
    z[s:s + 50_000] = lat
    for t, b in enumerate(betas):
        labels[t, s:s + 50_000] = np.argmax(lat @ b + rng.gumbel(size=(50_000, b.shape[1])), axis=1)
mask = np.zeros((len(kinds), 4), bool)
for t, k in enumerate(kinds):
    mask[t, :k] = True
a = jnp.ones((16384, 16384), jnp.float32)
f = jax.jit(lambda x: x @ x)
f(a).block_until_ready(); t0 = time.perf_counter()
for _ in range(10):
    f(a).block_until_ready()
peak = 2 * 16384 ** 3 * 10 / (time.perf_counter() - t0) / 1e12
free = jax.devices()[0].memory_stats().get("bytes_limit", 80e9) / 1e9
cfg = ProbeConfig(chunk=64, memory_gb=0.8 * free)
t0 = time.perf_counter()
basis = make_basis(z)
point = fit_replicates(basis, labels, np.ones((1, n), np.float32), mask, cfg)
t1 = time.perf_counter()
w = bootstrap_weights(np.random.default_rng(1), n, B)
boot = fit_replicates(basis, labels, w, mask, cfg, init=(point.coef[0], point.intercept[0]))
t2 = time.perf_counter()
flops = float(np.sum(boot.iterations) * 2 * 2.0 * n * d * 4 * len(kinds) * 1.1)
rec = {"device": str(jax.devices()[0].device_kind), "n": n, "d": d, "tasks": len(kinds), "boot": B,
       "point_s": t1 - t0, "boot_s": t2 - t1, "iterations_median": float(np.median(boot.iterations)),
       "achieved_tflops": flops / 1e12 / (t2 - t1), "matmul_peak_tflops": peak,
       "fraction_of_peak": flops / 1e12 / (t2 - t1) / peak, "converged": float(np.mean(boot.converged))}
print(json.dumps(rec))
with open(os.path.join(out, "large.jsonl"), "a") as fh:
    fh.write(json.dumps(rec) + "\n")
PYEOF
echo "results in $OUT"
