"""`inspector evaluate`: train a method (PatchCore, the station's, or one of evaluation.methods)
on an MVTec-AD-layout category's good images, score its test set, and report the image/pixel
metrics, timings, peak memory and (optionally) plots: one report for every method."""
from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import numpy as np

from ..core.memory_bank import Progress, no_progress
from ..core.model import Settings
from ..core.scoring import find_regions
from ..data.images import load_image
from ..data.mvtec import MVTecCategory, load_mask
from ..drawing import heat_range, map_to_image
from ..errors import SourceError
from . import metrics
from .methods.base import Method, check_cancel
from .methods.patchcore import PatchCore

MEMORY_SAMPLE_S = 0.05


def evaluate(category_dir: str | Path, settings: Settings, plots_dir: str | Path | None = None,
             progress: Progress = no_progress, cancel: threading.Event | None = None, device: str = "cpu"):
    """PatchCore, the station's method, on a category. Returns (report, model)."""
    method = PatchCore(settings, device)
    return evaluate_method(category_dir, method, plots_dir, progress, cancel), method.model


def evaluate_method(category_dir: str | Path, method: Method, plots_dir: str | Path | None = None,
                    progress: Progress = no_progress, cancel: threading.Event | None = None) -> dict:
    """Fit a method (methods.base.Method) on a category's good training images, score its test
    set and report the image/pixel metrics at the method's calibrated threshold, its training
    time, latency and peak memory; the same report for every method."""
    cat = MVTecCategory(category_dir)
    if len({s.label for s in cat.test_samples}) < 2:
        raise SourceError(f"{cat.root}/test needs both good and defective images to evaluate.")
    with PeakMemory() as memory:
        started = time.perf_counter()
        method.fit(cat.train_images, progress, cancel)
        train_seconds = time.perf_counter() - started
        samples = cat.test_samples
        labels = np.array([s.label for s in samples])
        scores = np.empty(len(samples))
        maps, masks = [], []  # at each image's working size
        latencies, gallery = [], []
        batch_started = time.perf_counter()
        for i, s in enumerate(samples):
            check_cancel(cancel)
            t = time.perf_counter()
            image = load_image(s.path)
            scores[i], amap = method.score(image)
            latencies.append((time.perf_counter() - t) * 1000.0)
            if amap is not None:
                maps.append(amap)  # at the working size, as the masks
                h, w = amap.shape
                masks.append(load_mask(s.mask_path, (w, h)) if s.mask_path is not None else np.zeros((h, w), bool))
                if plots_dir is not None:
                    gallery.append((s, image, scores[i], amap))
            progress("inspecting test images", i + 1, len(samples))
        batch_seconds = time.perf_counter() - batch_started

    # Pixel metrics over the images whose truth is known: good images (no defect pixel) and
    # defect images with a mask. A defect image without its mask is listed, never scored
    # against an empty mask; with no mask at all the pixel metrics are unavailable.
    missing = [s.path for s in samples if s.label == 1 and s.mask_path is None]
    known = np.array([s.label == 0 or s.mask_path is not None for s in samples])
    has_pixels = bool((known & (labels == 1)).any()) and method.has_map
    defect = known & (labels == 1)
    if has_pixels:
        known_masks, known_maps = [m for m, k in zip(masks, known) if k], [m for m, k in zip(maps, known) if k]
        defect_masks = [m for m, d in zip(masks, defect) if d]
        defect_preds = [m >= method.pixel_threshold for m, d in zip(maps, defect) if d]
    threshold, calibration = method.threshold, method.calibration
    f1_best, best_threshold = metrics.best_f1(labels, scores)
    calibrated = metrics.confusion(labels, scores, threshold)
    report = {
        "category": cat.name, "method": method.name, "settings": method.metadata(),
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(known_masks, known_maps) if has_pixels else None,
        "aupro": metrics.aupro(known_masks, known_maps, 0.3) if has_pixels else None,
        "dice": metrics.dice(defect_preds, defect_masks) if has_pixels else None,
        "pixel_metrics": (f"over {int(known.sum())} of {len(samples)} images" if has_pixels else
                          f"unavailable: the {method.name} method gives no anomaly map" if not method.has_map else
                          "unavailable: no defect image has a ground-truth mask"),
        "missing_masks": [str(p.relative_to(cat.root)) for p in missing],
        "threshold": threshold, "pixel_threshold": method.pixel_threshold,
        "f1_calibrated": calibrated["f1"], "confusion_calibrated": calibrated,
        "false_reject_rate": calibrated["false_reject_rate"], "escape_rate": calibrated["escape_rate"],
        "expected_false_reject_rate": calibration.false_reject_rate(threshold),
        "false_reject_interval": metrics.binomial_interval(
            calibration.false_reject_rate(threshold), int((labels == 0).sum())),
        "f1_best": f1_best, "best_threshold": best_threshold,
        "confusion_best": metrics.confusion(labels, scores, best_threshold),
        "per_defect_auroc": metrics.per_type_auroc([s.defect_type for s in samples], labels, scores),
        "train_seconds": train_seconds,
        "latency_ms_median": float(np.median(latencies)),
        "throughput_ips": len(samples) / batch_seconds,
        "peak_memory_added_mb": memory.peak_added_mb,
        "counts": method.counts, "test_images": len(samples),
        "labels": labels.tolist(), "scores": scores.tolist(),
    }
    if getattr(method, "training", None):
        report["training"] = method.training
    if plots_dir is not None:
        _plots(Path(plots_dir), report, labels, scores, known_masks if has_pixels else None,
               known_maps if has_pixels else None, gallery, method)
    return report


class PeakMemory:
    """The most resident memory the process holds above what it held at the start (after freed memory went back to the
    system), sampled every SAMPLE_S seconds by a thread; None where /proc/self/statm does not tell."""

    def __enter__(self):
        gc.collect()
        _trim_heap()
        self.start = self.peak = _resident_bytes()
        self.peak_added_mb = None
        self._done = threading.Event()
        if self.start is not None:
            self._thread = threading.Thread(target=self._sample, name="inspector-memory", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(MEMORY_SAMPLE_S):
            self.peak = max(self.peak, _resident_bytes() or 0)

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self.start is not None:
            self._thread.join()
            self.peak = max(self.peak, _resident_bytes() or 0)
            self.peak_added_mb = (self.peak - self.start) / 2 ** 20


def _resident_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc), so that a method's peak is its own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def megabytes(value: float | None) -> str:
    return "unavailable" if value is None else f"+{value:.0f} MB"


def summary(report: dict) -> str:
    """The report in a few lines for a terminal."""
    def figure(key: str) -> str:
        return "unavailable" if report[key] is None else f"{report[key]:.4f}"

    c = report["confusion_calibrated"]
    lines = [
        f"{report['category']} ({report['method']}): image AUROC {report['image_auroc']:.4f}, pixel AUROC {figure('pixel_auroc')}, "
        f"AUPRO {figure('aupro')} ({report['pixel_metrics']})",
        f"  calibrated threshold {report['threshold']:.3f}: F1 {report['f1_calibrated']:.4f} "
        f"(TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}), false rejects "
        f"{report['false_reject_rate']:.1%} (expected {report['expected_false_reject_rate']:.1%}), escapes "
        f"{report['escape_rate']:.1%}; best F1 {report['f1_best']:.4f} at {report['best_threshold']:.3f}; "
        f"Dice {figure('dice')}",
        "  per defect type: " + ", ".join(f"{k} {v:.4f}" for k, v in report["per_defect_auroc"].items()),
        f"  training {report['train_seconds']:.1f} s, latency median {report['latency_ms_median']:.1f} ms, "
        f"{report['throughput_ips']:.1f} images/s, peak memory {megabytes(report['peak_memory_added_mb'])}"
        + (f"; {report['training']['epochs']} epochs, the best at {report['training']['best_epoch']}"
           if "training" in report else ""),
    ]
    if report["missing_masks"]:
        lines.append(f"  {len(report['missing_masks'])} defect image(s) without a ground-truth mask, left out of "
                     f"the pixel metrics: " + ", ".join(report["missing_masks"]))
    return "\n".join(lines)


def _plots(folder: Path, report, labels, scores, masks, maps, gallery, method: Method) -> None:
    from . import plots

    folder.mkdir(parents=True, exist_ok=True)
    curves = {"image": metrics.roc(labels, scores)}
    if report["pixel_auroc"] is not None:
        curves["pixel"] = metrics.roc(np.concatenate([m.ravel() for m in masks]),
                                      np.concatenate([m.ravel() for m in maps]))
    plots.plot_roc(folder / "roc.png", curves)
    plots.plot_score_histogram(folder / "scores.png", scores[labels == 0], scores[labels == 1],
                               report["threshold"], f"{report['category']}: image scores")
    items = []
    for s, image, score, amap in gallery:
        h, w = image.shape[:2]
        gt = load_mask(s.mask_path, (w, h)) if s.mask_path is not None else None
        verdict = "NG" if score >= report["threshold"] else "OK"
        # As the station shows a result: an OK part without boxes, an NG part with them.
        regions = (find_regions(amap, report["pixel_threshold"], method.settings.min_region_area, (w, h))
                   if verdict == "NG" else [])
        items.append({"name": f"{s.defect_type}_{s.path.stem}", "image": image, "anomaly_map": amap,
                      "pred_mask": map_to_image(amap, w, h) >= report["pixel_threshold"], "gt_mask": gt,
                      "gt_boxes": _boxes(gt) if gt is not None else [],
                      "pred_boxes": [(r.x, r.y, r.w, r.h) for r in regions], "score": score, "verdict": verdict})
    if items:
        plots.save_gallery(folder / "gallery", items, *heat_range(report["threshold"]))


def _boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes around the connected areas of a ground-truth mask."""
    regions = find_regions(mask.astype(np.float32), 0.5, 1, (mask.shape[1], mask.shape[0]))
    return [(r.x, r.y, r.w, r.h) for r in regions]
