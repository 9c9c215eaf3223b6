#!/usr/bin/env python3
"""Times one denoising step of a catalog model with ONNX Runtime from Python, for comparison with
the Rust engine's `atelier::inference::bench::per_step` at the same thread count.

Both run one [1, 1, H, W] sample at sigma_max, every condition input at its parameter's default
(mapped as the manifest says), CPU provider, all graph optimisations, sequential execution,
`intra_op_num_threads = --threads`, after `--warmup` untimed runs.

    .tools/venv/bin/python scripts/bench-terrain-python.py --threads 1 --iterations 20
    ATELIER_BENCH_MODEL=terrain ATELIER_BENCH_THREADS=1 ATELIER_BENCH_ITERATIONS=20 \
        cargo test -p atelier --test inference bench_times_steps -- --nocapture

(The venv comes from scripts/fetch-models, which installs onnxruntime==1.31.1 into it.)
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default=os.environ.get("ATELIER_MODELS_DIR") or os.path.join(root, "models"))
    parser.add_argument("--model", default="terrain")
    parser.add_argument("--threads", type=int, default=1, help="intra_op_num_threads (0: ONNX Runtime decides)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()

    model_dir = os.path.join(args.models_dir, args.model)
    with open(os.path.join(model_dir, "model.json")) as f:
        manifest = json.load(f)
    params = {p["name"]: p["default"] for p in manifest["params"]}
    width = int(params.get("width", manifest["size"]["width"]))
    height = int(params.get("height", manifest["size"]["height"]))
    sigma_max = float(manifest["sampler"]["sigma_max"])

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(
        os.path.join(model_dir, manifest["file"]), sess_options=options, providers=["CPUExecutionProvider"]
    )

    # The Rust bench's deterministic noise-like input, bit for bit (f32 arithmetic throughout).
    i = np.arange(width * height, dtype=np.int64)
    x = (((i * 7919) % 2001).astype(np.float32) / np.float32(1000.0) - np.float32(1.0)) * np.float32(sigma_max)
    feeds = {}
    for spec in manifest["inputs"]:
        if spec["role"] == "noisy":
            feeds[spec["name"]] = x.reshape(1, 1, height, width)
        elif spec["role"] == "sigma":
            feeds[spec["name"]] = np.array([sigma_max], dtype=np.float32)
        elif spec["role"] == "condition":
            value = float(params[spec["param"]])
            if spec.get("map"):
                (a, b), (c, d) = spec["map"]["from"], spec["map"]["to"]
                value = c + (value - a) * (d - c) / (b - a)
            feeds[spec["name"]] = np.array([value], dtype=np.float32)
    output = next(o["name"] for o in manifest["outputs"] if o["role"] == "denoised")

    for _ in range(args.warmup):
        session.run([output], feeds)
    times = []
    for _ in range(max(1, args.iterations)):
        start = time.perf_counter()
        session.run([output], feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    report = {
        "model": args.model,
        "runtime": f"onnxruntime {ort.__version__} (Python {sys.version.split()[0]})",
        "threads": args.threads,
        "iterations": len(times),
        "mean_ms": statistics.fmean(times),
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['model']} on cpu with {args.threads} thread(s) [{report['runtime']}]: "
            f"median {report['median_ms']:.2f} ms, mean {report['mean_ms']:.2f} ms, "
            f"min {report['min_ms']:.2f} ms, max {report['max_ms']:.2f} ms per step ({len(times)} steps)"
        )
    if not all(math.isfinite(t) for t in times):
        sys.exit("non-finite timing")


if __name__ == "__main__":
    main()
