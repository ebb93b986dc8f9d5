"""`inspector evaluate`: train on an MVTec-AD-layout category's good images, score its test
set, and report the image/pixel metrics, timings and (optionally) plots."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..core.memory_bank import Progress, no_progress
from ..core.model import Settings
from ..core.scoring import Inspector, find_regions
from ..core.training import train
from ..data.images import load_image
from ..data.mvtec import MVTecCategory, load_mask
from ..drawing import heat_range, map_to_image
from ..errors import Cancelled, SourceError
from . import metrics


def evaluate(category_dir: str | Path, settings: Settings, plots_dir: str | Path | None = None,
             progress: Progress = no_progress, cancel: threading.Event | None = None,
             device: str = "cpu"):
    """Returns (report, model)."""

    cat = MVTecCategory(category_dir)
    if len({s.label for s in cat.test_samples}) < 2:
        raise SourceError(f"{cat.root}/test needs both good and defective images to evaluate.")
    started = time.perf_counter()
    model = train(cat.name, cat.train_images, settings, progress, cancel, device)[0]  # features freed
    train_seconds = time.perf_counter() - started
    inspector = Inspector(model, device)
    samples = cat.test_samples
    labels = np.array([s.label for s in samples])
    scores = np.empty(len(samples))
    maps, masks = [], []  # at each image's working size
    latencies = []
    gallery = []
    batch_started = time.perf_counter()
    for i, s in enumerate(samples):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Evaluation cancelled.")
        t = time.perf_counter()
        image = load_image(s.path)
        result = inspector.inspect(image)
        latencies.append((time.perf_counter() - t) * 1000.0)
        scores[i] = result.score
        maps.append(result.anomaly_map)  # at the working size, as the masks
        h, w = result.anomaly_map.shape
        masks.append(load_mask(s.mask_path, (w, h)) if s.mask_path is not None else np.zeros((h, w), bool))
        if plots_dir is not None:
            gallery.append((s, image, result))
        progress("inspecting test images", i + 1, len(samples))
    batch_seconds = time.perf_counter() - batch_started

    # Pixel metrics over the images whose truth is known: good images (no defect pixel) and
    # defect images with a mask. A defect image without its mask is listed, never scored
    # against an empty mask; with no mask at all the pixel metrics are unavailable.
    missing = [s.path for s in samples if s.label == 1 and s.mask_path is None]
    known = np.array([s.label == 0 or s.mask_path is not None for s in samples])
    has_pixels = bool((known & (labels == 1)).any())
    defect = known & (labels == 1)
    known_masks, known_maps = [m for m, k in zip(masks, known) if k], [m for m, k in zip(maps, known) if k]
    defect_masks = [m for m, d in zip(masks, defect) if d]
    defect_preds = [m >= model.pixel_threshold for m, d in zip(maps, defect) if d]
    f1_best, best_threshold = metrics.best_f1(labels, scores)
    calibrated = metrics.confusion(labels, scores, model.threshold)
    report = {
        "category": cat.name, "settings": model.metadata()["settings"],
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(known_masks, known_maps) if has_pixels else None,
        "aupro": metrics.aupro(known_masks, known_maps, 0.3) if has_pixels else None,
        "dice": metrics.dice(defect_preds, defect_masks) if has_pixels else None,
        "pixel_metrics": (f"over {int(known.sum())} of {len(samples)} images" if has_pixels else
                          "unavailable: no defect image has a ground-truth mask"),
        "missing_masks": [str(p.relative_to(cat.root)) for p in missing],
        "threshold": model.threshold, "pixel_threshold": model.pixel_threshold,
        "f1_calibrated": calibrated["f1"], "confusion_calibrated": calibrated,
        "false_reject_rate": calibrated["false_reject_rate"], "escape_rate": calibrated["escape_rate"],
        "expected_false_reject_rate": model.calibration.false_reject_rate(model.threshold),
        "false_reject_interval": metrics.binomial_interval(
            model.calibration.false_reject_rate(model.threshold), int((labels == 0).sum())),
        "f1_best": f1_best, "best_threshold": best_threshold,
        "confusion_best": metrics.confusion(labels, scores, best_threshold),
        "per_defect_auroc": metrics.per_type_auroc([s.defect_type for s in samples], labels, scores),
        "train_seconds": train_seconds,
        "latency_ms_median": float(np.median(latencies)),
        "throughput_ips": len(samples) / batch_seconds,
        "counts": model.counts, "test_images": len(samples),
    }
    if plots_dir is not None:
        _plots(Path(plots_dir), report, labels, scores, known_masks, known_maps, gallery, model)
    return report, model


def summary(report: dict) -> str:
    """The report in a few lines for a terminal."""
    def figure(key: str) -> str:
        return "unavailable" if report[key] is None else f"{report[key]:.4f}"

    c = report["confusion_calibrated"]
    lines = [
        f"{report['category']}: image AUROC {report['image_auroc']:.4f}, pixel AUROC {figure('pixel_auroc')}, "
        f"AUPRO {figure('aupro')} ({report['pixel_metrics']})",
        f"  calibrated threshold {report['threshold']:.3f}: F1 {report['f1_calibrated']:.4f} "
        f"(TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}), false rejects "
        f"{report['false_reject_rate']:.1%} (expected {report['expected_false_reject_rate']:.1%}), escapes "
        f"{report['escape_rate']:.1%}; best F1 {report['f1_best']:.4f} at {report['best_threshold']:.3f}; "
        f"Dice {figure('dice')}",
        "  per defect type: " + ", ".join(f"{k} {v:.4f}" for k, v in report["per_defect_auroc"].items()),
        f"  training {report['train_seconds']:.1f} s, latency median {report['latency_ms_median']:.1f} ms, "
        f"{report['throughput_ips']:.1f} images/s",
    ]
    if report["missing_masks"]:
        lines.append(f"  {len(report['missing_masks'])} defect image(s) without a ground-truth mask, left out of "
                     f"the pixel metrics: " + ", ".join(report["missing_masks"]))
    return "\n".join(lines)


def _plots(folder: Path, report, labels, scores, masks, maps, gallery, model) -> None:
    from . import plots

    folder.mkdir(parents=True, exist_ok=True)
    curves = {"image": metrics.roc(labels, scores)}
    if report["pixel_auroc"] is not None:
        curves["pixel"] = metrics.roc(np.concatenate([m.ravel() for m in masks]),
                                      np.concatenate([m.ravel() for m in maps]))
    plots.plot_roc(folder / "roc.png", curves)
    plots.plot_score_histogram(folder / "scores.png", scores[labels == 0], scores[labels == 1],
                               model.threshold, f"{report['category']}: image scores")
    items = []
    for s, image, result in gallery:
        h, w = image.shape[:2]
        gt = load_mask(s.mask_path, (w, h)) if s.mask_path is not None else None
        items.append({
            "name": f"{s.defect_type}_{s.path.stem}", "image": image, "anomaly_map": result.anomaly_map,
            "pred_mask": map_to_image(result.anomaly_map, w, h) >= model.pixel_threshold, "gt_mask": gt,
            "gt_boxes": _boxes(gt) if gt is not None else [],
            "pred_boxes": [(r.x, r.y, r.w, r.h) for r in result.regions],
            "score": result.score, "verdict": result.verdict,
        })
    plots.save_gallery(folder / "gallery", items, *heat_range(model.threshold))


def _boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes around the connected areas of a ground-truth mask."""
    regions = find_regions(mask.astype(np.float32), 0.5, 1, (mask.shape[1], mask.shape[0]))
    return [(r.x, r.y, r.w, r.h) for r in regions]
