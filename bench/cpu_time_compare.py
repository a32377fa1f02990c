"""Single-thread CPU time per training step (time.process_time), robust to other processes.

Usage: OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/cpu_time_compare.py OUT.json
Prints compiled, NumPy backend and GEMM-only ms per step for every benchmark shape.
"""
import time, sys, json, numpy as np, dnnblocks
shapes = {"cat": ([12288,20,7,5,1],209), "tabular": ([30,16,8,1],455), "mnistish": ([784,256,128,1],1024),
          "mb64": ([784,256,128,1],64), "large": ([1024,1024,1024,1],4096)}
def gemm_bound(dims, m, X, dtype):
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((dims[i+1], dims[i])).astype(dtype) for i in range(len(dims)-1)]
    A = [X] + [np.empty((n, m), dtype) for n in dims[1:]]
    dZ = [rng.standard_normal((n, m)).astype(dtype) for n in dims[1:]]
    dW = [np.empty_like(w) for w in W]
    dA = [np.empty((n, m), dtype) for n in dims[1:]]
    def f():
        for l in range(len(W)):
            np.dot(W[l], A[l], out=A[l+1])
        for l in range(len(W)-1, -1, -1):
            np.dot(dZ[l], A[l].T, out=dW[l])
            if l > 0:
                np.dot(W[l].T, dZ[l], out=dA[l-1])
    return f
def t(f, seconds):
    for _ in range(3): f()
    t0 = time.process_time(); f(); one = time.process_time() - t0
    n = max(3, int(seconds / max(one, 1e-6)))
    ts = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n): f()
        ts.append((time.process_time() - t0) / n)
    return float(np.median(ts)) * 1e3
out = {}
for dtype in ("float64", "float32"):
    for name, (dims, m) in shapes.items():
        rng = np.random.default_rng(1)
        X = rng.standard_normal((dims[0], m)).astype(dtype)
        Y = (rng.random((1, m)) > 0.5).astype(dtype)
        sec = 0.6 if name != "large" else 2.0
        res = {}
        for be in ("compiled", "numpy"):
            net = dnnblocks.Network(dims, dtype=dtype, backend=be, seed=0)
            res[be] = t(lambda: net.step(X, Y, 1e-3), sec)
        res["gemm"] = t(gemm_bound(dims, m, X, dtype), sec)
        out[f"{name}/{dtype}"] = res
        print(f"{name:9s} {dtype} " + " ".join(f"{k}={v:9.4f}" for k, v in res.items()),
              f" c/g={res['compiled']/res['gemm']:.3f} n/c={res['numpy']/res['compiled']:.2f}", flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
