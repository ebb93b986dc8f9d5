"""Benchmark on an MVTec-AD-layout category (default: the bottle beside the checkout):
accuracy, training time, load-to-verdict latency, batch throughput and peak memory, against
the targets. Figures are medians of one run on this machine; compare ratios, not absolutes
across machines. With --gate, exit 1 below image AUROC 0.99 or pixel AUROC 0.97 (CI)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inspector.cli import ProgressLine
from inspector.core.model import Settings
from inspector.core.scoring import Inspector
from inspector.data.images import load_image
from inspector.data.mvtec import MVTecCategory
from inspector.evaluation.report import evaluate
from inspector.station import Station
from inspector.store.results import ResultStore

TARGETS = {"image_auroc": (">=", 0.995), "pixel_auroc": (">=", 0.980), "aupro": (">=", 0.93),
           "train_seconds": ("<=", 15.0), "latency_ms_median": ("<=", 40.0),
           "throughput_ips": (">=", 25.0), "peak_memory_mb": ("<=", 1536.0)}
GATE = {"image_auroc": 0.99, "pixel_auroc": 0.97}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("category", nargs="?", default=Path(__file__).resolve().parents[1].parent
                    / "shared" / "datasets" / "mvtec_ad" / "bottle", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--gate", action="store_true")
    args = ap.parse_args()

    settings = Settings()
    report, model = evaluate(args.category, settings, progress=ProgressLine())

    # Load-to-verdict latency, one image at a time, after a warm-up.
    inspector = Inspector(model)
    files = [s.path for s in MVTecCategory(args.category).test_samples]
    inspector.inspect(load_image(files[0]))
    latencies = []
    for path in files:
        t = time.perf_counter()
        inspector.inspect(load_image(path))
        latencies.append((time.perf_counter() - t) * 1000.0)

    # Batch throughput through the line (reader thread ahead, SQLite log written).
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "log.db") as store:
        station = Station(inspector, store, "folder")
        t = time.perf_counter()
        n = sum(1 for _ in station.inspect_files(files))
        throughput = n / (time.perf_counter() - t)

    figures = {k: report[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_calibrated", "f1_best",
                                      "dice", "train_seconds")}
    figures |= {"latency_ms_median": float(np.median(latencies)),
                "latency_ms_p90": float(np.percentile(latencies, 90)),
                "throughput_ips": throughput,
                "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "cpu_cores": os.cpu_count()}
    print(f"\n{report['category']}, default settings, {os.cpu_count()} cores")
    for key, value in figures.items():
        target = TARGETS.get(key)
        verdict = ""
        if target:
            op, limit = target
            met = value >= limit if op == ">=" else value <= limit
            verdict = f"target {op} {limit}: {'met' if met else 'MISSED'}"
        print(f"  {key:20} {value:10.4f}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps(figures | {"report": report}, indent=2))
    if args.gate:
        failed = [f"{k} {figures[k]:.4f} < {v}" for k, v in GATE.items() if figures[k] < v]
        if failed:
            print("QUALITY GATE FAILED: " + "; ".join(failed))
            return 1
        print("quality gate passed: " + ", ".join(f"{k} >= {v}" for k, v in GATE.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
