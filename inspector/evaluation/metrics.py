"""Evaluation metrics: image and pixel AUROC, AUPRO, confusion counts, F1, Dice.

Labels are 1 (defective, NG, positive) and 0 (good, OK). A score >= threshold is NG. Every curve comes from one
sort-based helper (`_cumulative_at_thresholds`), which is exact (it visits every distinct score) and fast enough
for millions of pixels; it needs no scikit-learn, which the tests use as an independent reference instead."""

from __future__ import annotations

import cv2
import numpy as np


EXACT_LIMIT = 1 << 22  # up to this many samples every distinct score is a threshold
LEVELS = 1 << 16  # beyond, this many evenly spaced score levels are (pixels of many large maps)
_CHUNK = 1 << 22


def _cumulative_at_thresholds(scores, *weights):
    """For every distinct score t, highest first: t and, for each weight array, the sum of the weights over the
    samples with score >= t. Beyond EXACT_LIMIT samples (the pixels of a test set's maps at their working sizes)
    the thresholds are LEVELS evenly spaced levels between the lowest and the highest score, summed in chunks:
    memory stays a few bytes a sample, and an area under such a curve differs from the exact one by the pairs of
    samples that share a level (below 1e-4 on real maps)."""
    if scores.size <= EXACT_LIMIT:
        order = np.argsort(scores)[::-1]
        ranked = scores[order]
        last_of_group = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1)
        sums = [np.cumsum(w[order])[last_of_group] for w in weights]
        return ranked[last_of_group], sums
    low, high = float(scores.min()), float(scores.max())
    step = (high - low) / (LEVELS - 1) or 1.0
    totals = [np.zeros(LEVELS) for _ in weights]
    for start in range(0, scores.size, _CHUNK):
        level = ((scores[start:start + _CHUNK] - low) / step).astype(np.int64)
        for total, w in zip(totals, weights):
            total += np.bincount(level, weights=w[start:start + _CHUNK], minlength=LEVELS)[:LEVELS]
    used = np.flatnonzero(sum(t != 0 for t in totals))[::-1]  # highest level first, empty ones left out
    return low + used * step, [np.cumsum(t[::-1])[::-1][used] for t in totals]


def _area_up_to(x, y, limit):
    """Trapezoid area under y(x) (x non-decreasing) from x[0] up to `limit`, y interpolated there."""
    k = np.searchsorted(x, limit, side="right")
    if k < x.size:
        t = (limit - x[k - 1]) / (x[k] - x[k - 1])
        x = np.append(x[:k], limit)
        y = np.append(y[:k], y[k - 1] + t * (y[k] - y[k - 1]))
    return float(np.trapezoid(y, x))


def _labels_and_scores(labels, scores):
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    if labels.size != scores.size:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 0 (good) or 1 (defective)")
        labels = labels.astype(bool)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return labels, scores


def _masks_and_maps(masks, maps):
    """Pairs of (H, W) mask and map, each pair of one size (images may differ in size)."""
    masks = [np.asarray(m, dtype=bool) for m in masks]
    maps = [np.asarray(m) for m in maps]
    if len(masks) != len(maps) or not masks or any(
            a.ndim != 2 or a.shape != b.shape for a, b in zip(masks, maps)):
        raise ValueError(f"masks {[a.shape for a in masks[:3]]}... and maps {[b.shape for b in maps[:3]]}... "
                         f"must pair (H, W) arrays of equal sizes")
    return masks, maps


def _flat(arrays) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays])


def roc(labels, scores) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact ROC curve: (fpr, tpr, auc), one point per distinct score plus (0, 0)."""
    labels, scores = _labels_and_scores(labels, scores)
    if labels.all() or not labels.any():
        raise ValueError("AUROC needs both good and defective samples")
    _, (tps, fps) = _cumulative_at_thresholds(scores, labels, ~labels)
    fpr = np.append(0.0, fps / fps[-1])
    tpr = np.append(0.0, tps / tps[-1])
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of image scores against image labels."""
    return roc(labels, scores)[2]


def pixel_auroc(masks, maps) -> float:
    """Area under the ROC curve of every pixel: masks and maps, (H, W) each (N, H, W arrays or lists)."""
    masks, maps = _masks_and_maps(masks, maps)
    return roc(_flat(masks), _flat(maps))[2]


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve for FPR in [0, fpr_limit], over fpr_limit (MVTec AD). Regions are the
    8-connected components of each mask; the FPR counts the pixels outside every mask over all images, good ones
    included."""
    masks, maps = _masks_and_maps(masks, maps)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    region_weight = []  # 1 / area of the pixel's region
    n_regions = 0
    for mask in masks:
        count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        inverse_area = 1.0 / np.bincount(regions.ravel(), minlength=count)
        inverse_area[0] = 0.0  # label 0 is the background
        region_weight.append(inverse_area[regions].astype(np.float32))
        n_regions += count - 1
    normal = ~_flat(masks)
    if n_regions == 0 or not normal.any():
        raise ValueError("AUPRO needs defect regions and normal pixels")
    _, (false_pos, overlap) = _cumulative_at_thresholds(_flat(maps), normal, _flat(region_weight))
    fpr = np.append(0.0, false_pos / false_pos[-1])
    pro = np.append(0.0, overlap / n_regions)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def _ratio(num, den) -> float:
    return float(num / den) if den else 0.0


def confusion(labels, scores, threshold: float) -> dict:
    """Counts and rates of the verdicts `score >= threshold` (NG) against the labels (a rate x / 0 is 0.0)."""
    labels, scores = _labels_and_scores(labels, scores)
    ng = scores >= threshold
    tp, fp = int(np.sum(ng & labels)), int(np.sum(ng & ~labels))
    fn, tn = int(np.sum(~ng & labels)), int(np.sum(~ng & ~labels))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "precision": precision, "recall": recall,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "false_reject_rate": _ratio(fp, fp + tn),  # good parts judged NG
            "escape_rate": _ratio(fn, fn + tp)}  # defective parts judged OK


def best_f1(labels, scores) -> tuple[float, float]:
    """(f1, threshold) with the highest F1 over every distinct score as threshold; the
    threshold is a score, so `confusion(labels, scores, threshold)["f1"]` equals f1.
    Among equal F1 the lowest threshold (fewest escapes) wins."""
    labels, scores = _labels_and_scores(labels, scores)
    if not labels.any():
        raise ValueError("F1 needs at least one defective sample")
    thresholds, (tps, fps) = _cumulative_at_thresholds(scores, labels, ~labels)
    f1 = 2 * tps / (tps + fps + labels.sum())  # 2tp / (2tp + fp + fn)
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))
    return float(f1[best]), float(thresholds[best])


def dice(pred_masks, gt_masks) -> float:
    """Mean Dice coefficient over images; two empty masks count as 1.0."""
    if len(pred_masks) != len(gt_masks) or len(gt_masks) == 0:
        raise ValueError(f"need as many predicted masks ({len(pred_masks)}) as ground-truth "
                         f"masks ({len(gt_masks)}), at least one")
    values = []
    for pred, gt in zip(pred_masks, gt_masks):
        pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
        total = pred.sum() + gt.sum()
        values.append(2.0 * np.sum(pred & gt) / total if total else 1.0)
    return float(np.mean(values))


def per_type_auroc(types, labels, scores) -> dict[str, float]:
    """{defect type: image AUROC of that type's images against all good images}."""
    labels, scores = _labels_and_scores(labels, scores)
    types = np.asarray(types).ravel()
    if types.size != labels.size:
        raise ValueError(f"{types.size} types but {labels.size} labels")
    result = {}
    for defect_type in sorted(set(types[labels])):
        keep = ~labels | (types == defect_type)
        result[str(defect_type)] = image_auroc(labels[keep], scores[keep])
    return result


def binomial_interval(rate: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of the share of n parts that a rate predicts: the binomial quantiles (lo, hi) / n
    of Binomial(n, rate), exact. A measured share of n parts outside it says the prediction did not come true."""
    import math

    if n <= 0:
        raise ValueError("the interval needs at least one part")
    rate = min(max(float(rate), 0.0), 1.0)
    if rate in (0.0, 1.0):
        return rate, rate
    log_pmf = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
               + k * math.log(rate) + (n - k) * math.log1p(-rate) for k in range(n + 1)]
    cdf = np.cumsum(np.exp(log_pmf))
    tail = (1.0 - level) / 2
    lo = int(np.searchsorted(cdf, tail))
    hi = int(np.searchsorted(cdf, 1.0 - tail))
    return lo / n, min(hi, n) / n
