"""Benchmark on MVTec-AD-layout categories (default: every category under
../shared/datasets/mvtec_ad beside the checkout): accuracy at default settings, training time,
load-to-verdict latency, batch throughput and peak memory, as one table against the targets.
Figures are medians of one run on this machine; compare ratios, not absolutes across machines.
With --gate, exit 1 when a category misses its quality gate (CI)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import inspector  # noqa: F401 - first: it sets how numpy's BLAS threads wait, read when numpy loads
import numpy as np

from inspector import services
from inspector.cli import ProgressLine
from inspector.core.model import Model, Settings, load_model, save_model
from inspector.core.scoring import Inspector
from inspector.data.images import load_image
from inspector.data.mvtec import MVTecCategory, TestSample
from inspector.evaluation import metrics
from inspector.evaluation.report import evaluate
from inspector.station import Station
from inspector.store.results import ResultStore

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mvtec_ad"
# Targets: "*" holds for every category; a category's own entries add to them.
TARGETS = {
    "*": {"f1_calibrated": (">=", 0.90), "false_reject_rate": ("<=", 0.05), "peak_memory_mb": ("<=", 600.0),
          "auroc_drop_after_teaching": ("<=", 0.005)},
    "bottle": {"image_auroc": (">=", 0.995), "pixel_auroc": (">=", 0.980), "aupro": (">=", 0.93),
               "train_seconds": ("<=", 8.0), "latency_ms_median": ("<=", 32.0), "frame_latency_ms_median": ("<=", 12.0),
               "throughput_ips": (">=", 30.0), "teach_seconds": ("<=", 2.0)},
    "grid": {"image_auroc": (">=", 0.98), "pixel_auroc": (">=", 0.97), "aupro": (">=", 0.90)},
}
# The quality gate CI enforces (a category that is not here is reported, not gated).
GATE = {"bottle": {"image_auroc": 0.99, "pixel_auroc": 0.97},
        "grid": {"image_auroc": 0.97, "pixel_auroc": 0.97}}
FIGURES = ("image_auroc", "pixel_auroc", "aupro", "f1_calibrated", "f1_best", "false_reject_rate",
           "escape_rate", "expected_false_reject_rate", "dice", "train_seconds", "latency_ms_median",
           "latency_ms_p90", "frame_latency_ms_median", "throughput_ips", "teach_seconds",
           "auroc_drop_after_teaching", "peak_memory_mb")
TAUGHT = 5  # test good images taught ('this part is good') before the AUROC on the rest is measured


def measure(category: Path) -> dict:
    report, model = evaluate(category, Settings(), progress=ProgressLine())

    # Load-to-verdict latency, one image at a time, after a warm-up; the inspection alone is the
    # latency of a camera frame (already in memory).
    inspector = Inspector(model)
    files = [s.path for s in MVTecCategory(category).test_samples]
    inspector.inspect(load_image(files[0]))
    latencies, frame_latencies = [], []
    for path in files:
        t = time.perf_counter()
        frame = load_image(path)
        loaded = time.perf_counter()
        inspector.inspect(frame)
        latencies.append((time.perf_counter() - t) * 1000.0)
        frame_latencies.append((time.perf_counter() - loaded) * 1000.0)

    # Batch throughput through the line (reader thread ahead, SQLite log written).
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "log.db") as store:
        station = Station(inspector, store, "folder")
        t = time.perf_counter()
        n = sum(1 for _ in station.inspect_files(files))
        throughput = n / (time.perf_counter() - t)

    return {k: report.get(k) for k in FIGURES} | teaching(model, MVTecCategory(category).test_samples, inspector) | {
        "latency_ms_median": float(np.median(latencies)),
        "latency_ms_p90": float(np.percentile(latencies, 90)),
        "frame_latency_ms_median": float(np.median(frame_latencies)),
        "throughput_ips": throughput,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "report": report,
    }


def teaching(model: Model, samples: list[TestSample], inspector: Inspector) -> dict:
    """Teach the first TAUGHT test good images one at a time, each from its file into the saved
    model through the service (a fresh backbone each time, as the command line does): the
    median time per image, and how much the image AUROC on the rest of the test set drops."""
    taught_paths = [s.path for s in samples if s.label == 0][:TAUGHT]
    rest = [s for s in samples if s.path not in taught_paths]
    seconds = []
    with tempfile.TemporaryDirectory() as tmp, ResultStore(Path(tmp) / "log.db") as store:
        save_model(model, tmp)
        for path in taught_paths:
            t = time.perf_counter()
            services.teach(tmp, store, model.product, [path])
            seconds.append(time.perf_counter() - t)
        taught = Inspector(load_model(tmp, model.product), extractor=inspector.extractor)
    labels = np.array([s.label for s in rest])
    before, after = [], []
    for s in rest:
        features = inspector.extractor([load_image(s.path)])[0]
        before.append(inspector.score_features(features)[0])
        after.append(taught.score_features(features)[0])
    return {"teach_seconds": float(np.median(seconds)),
            "auroc_drop_after_teaching": metrics.image_auroc(labels, before) - metrics.image_auroc(labels, after)}


def targets(category: str) -> dict:
    return TARGETS["*"] | TARGETS.get(category, {})


def cell(value, target) -> str:
    if value is None:
        return f"{'n/a':>10}  "
    text = f"{value:10.4f}"
    if target is None:
        return text + "  "
    op, limit = target
    met = value >= limit if op == ">=" else value <= limit
    return text + ("  " if met else " !")


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = [f"{'':28}" + "".join(f"{n:>14}" for n in names)]
    for key in FIGURES:
        lines.append(f"  {key:26}" + "".join(f"{cell(results[n][key], targets(n).get(key)):>14}" for n in names))
    lines.append("  (! = misses its target)   targets: " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {op} {v}" for k, (op, v) in targets(n).items()) for n in names))
    return "\n".join(lines)


def gate(results: dict[str, dict]) -> list[str]:
    failed = []
    for name, limits in GATE.items():
        if name not in results:
            print(f"quality gate: {name} not benchmarked (not found)")
            continue
        failed += [f"{name} {k} {results[name][k]:.4f} < {v}" for k, v in limits.items()
                   if results[name][k] is None or results[name][k] < v]
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("categories", nargs="*", type=Path,
                    help=f"category folders (default: every folder in {DATASETS})")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--gate", action="store_true")
    args = ap.parse_args()
    categories = args.categories or sorted(p for p in DATASETS.iterdir() if (p / "train").is_dir())

    results = {c.name: measure(c) for c in categories}
    print(f"\nBenchmark, default settings ({Settings()}), {os.cpu_count()} cores")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results | {"cpu_cores": os.cpu_count()}, indent=2))
    if args.gate:
        failed = gate(results)
        if failed:
            print("QUALITY GATE FAILED: " + "; ".join(failed))
            return 1
        print("quality gate passed: " + "; ".join(
            f"{n}: " + ", ".join(f"{k} >= {v}" for k, v in lim.items()) for n, lim in GATE.items() if n in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
