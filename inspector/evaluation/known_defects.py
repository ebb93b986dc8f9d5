"""`inspector evaluate CATEGORY --known-defects N`: the memory bank alone, the defect classifier
alone and both (core.supervised) side by side on the same held-back images.

The bank learns from the category's good training images as the station does; N seeded defects
of each kind of the test set are given as known (with their masks) and the heads learn from them
and from the good training images; every other test image is held back and scored by all three.
Escapes and false rejects are counted at each one's calibrated threshold (the bank's: median + k
robust spreads; the classifier's: from its out-of-fold logits; both: NG when either is over)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..core import supervised
from ..core.calibration import robust_centre_spread
from ..core.memory_bank import Progress, no_progress
from ..core.model import Settings
from ..core.scoring import Inspector, patch_scores, score_patches
from ..core.training import train
from ..data.images import load_image
from ..data.mvtec import MVTecCategory, load_mask
from ..errors import SourceError
from . import metrics
from .methods.base import check_cancel

COLUMNS = ("bank", "classifier", "both")


def pick_known(kinds: list[str], n: int, seed: int) -> list[int]:
    """Indices of n seeded defects of each kind ('good' is no kind); each kind keeps at least one held back."""
    rng = np.random.default_rng(seed)
    known = []
    for kind in sorted(set(kinds) - {"good"}):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        if len(idx) <= n:
            raise SourceError(f"The test set has {len(idx)} defect(s) of kind '{kind}': giving {n} as known leaves "
                              f"none to score. Use --known-defects {max(1, len(idx) - 1)} or fewer.")
        known += rng.choice(idx, n, replace=False).tolist()
    return sorted(known)


def evaluate_known_defects(category_dir: str | Path, settings: Settings, n: int,
                           progress: Progress = no_progress, cancel: threading.Event | None = None) -> dict:
    cat = MVTecCategory(category_dir)
    model, good = train("evaluation", cat.train_images, settings, progress, cancel)
    inspector = Inspector(model)
    samples = cat.test_samples
    rows = []
    for i, s in enumerate(samples):
        check_cancel(cancel)
        features = inspector.features(load_image(s.path))
        distances = patch_scores(features, inspector.bank_index)
        h, w = features.shape[0] * 8, features.shape[1] * 8
        mask = (load_mask(s.mask_path, (w, h)) if s.mask_path is not None else
                np.zeros((h, w), bool) if s.label == 0 else None)
        rows.append(supervised.Example(features.astype(np.float16), distances, s.defect_type, mask, s.path.name))
        progress("scoring test images", i + 1, len(samples))
    good_examples = [supervised.Example(f, d, "good") for f, d in zip(good.features, model.calibration_patch_scores)]
    return compare_on_held_back(cat.name, model, good_examples, rows, n, cancel)


def compare_on_held_back(name: str, model, good_examples: list, rows: list, n: int,
                         cancel: threading.Event | None = None) -> dict:
    """Train the heads on the good examples and n known defects per kind of `rows` (the test
    set's examples), score the rest with the bank, the classifier and both: the report."""
    known = set(pick_known([r.kind for r in rows], n, model.settings.seed))
    centre, spread = robust_centre_spread(model.calibration.image_scores)
    started = time.perf_counter()
    heads = supervised.train_heads(good_examples, [rows[i] for i in sorted(known)], centre, model.threshold,
                                   model.settings.seed, cancel)
    train_seconds = time.perf_counter() - started

    held = [r for i, r in enumerate(rows) if i not in known]
    labels = np.array([int(r.defect) for r in held])
    scores = {c: np.empty(len(held)) for c in COLUMNS}
    maps = {"bank": [], "classifier": [], "both": []}
    drawn = {"bank": [], "both": []}  # each held-back image's mask as the verdict draws it
    latencies = []
    for i, r in enumerate(held):
        scores["bank"][i], amap = score_patches(r.distances, model.roi)
        t = time.perf_counter()
        x = heads.inputs(r.features, r.distances)
        logit, cam = heads.classify(x, r.distances.shape)
        seg = heads.segment(x, r.distances.shape)
        latencies.append((time.perf_counter() - t) * 1000.0)
        scores["classifier"][i] = logit
        scores["both"][i] = supervised.combined_margin(scores["bank"][i], model.threshold, spread, logit, heads)
        maps["bank"].append(amap)
        maps["classifier"].append(supervised.upsample(cam))
        both_map, both_threshold = heads.mask_map(seg, amap) or (amap, model.pixel_threshold)
        maps["both"].append(both_map)
        drawn["bank"].append(amap >= model.pixel_threshold)
        drawn["both"].append(both_map >= both_threshold)
    thresholds = {"bank": model.threshold, "classifier": heads.classifier_threshold, "both": 0.0}
    truth = [r.mask is not None for r in held]
    defect = [r.mask is not None and r.defect for r in held]
    report = {"category": name, "known_per_kind": n, "known_defects": len(known),
              "held_back": {"good": int((labels == 0).sum()), "defects": int(labels.sum())},
              "heads": heads.counts | {"mask_rule": heads.mask_rule, "mask_threshold": heads.segment_threshold},
              "train_seconds": train_seconds,
              "latency_added_ms_median": float(np.median(latencies))}
    for c in COLUMNS:
        conf = metrics.confusion(labels, scores[c], thresholds[c])
        masks = [r.mask for r, k in zip(held, truth) if k]
        report[c] = {
            "false_rejects": conf["fp"], "escapes": conf["fn"],
            "false_reject_rate": conf["false_reject_rate"], "escape_rate": conf["escape_rate"],
            "image_auroc": metrics.image_auroc(labels, scores[c]),
            "pixel_auroc": metrics.pixel_auroc(masks, [m for m, k in zip(maps[c], truth) if k]) if any(defect) else None,
            "dice": (metrics.dice([m for m, d in zip(drawn[c], defect) if d],
                                  [r.mask for r, d in zip(held, defect) if d]) if any(defect) and c in drawn else None),
        }
    return report


def summary(report: dict) -> str:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [f"{report['category']}: {report['known_defects']} known defects ({report['known_per_kind']} per kind); "
             f"held back {report['held_back']['good']} good, {report['held_back']['defects']} defects; "
             f"training the heads {report['train_seconds']:.1f} s, + {report['latency_added_ms_median']:.2f} ms a part",
             f"  {'':<11}{'escapes':>9}{'false rej.':>11}{'image AUROC':>12}{'pixel AUROC':>12}{'Dice':>7}"]
    for c in COLUMNS:
        r = report[c]
        lines.append(f"  {c:<11}{r['escapes']:>9}{r['false_rejects']:>11}{r['image_auroc']:>12.4f}"
                     f"{cell(r['pixel_auroc'], '.4f'):>12}{cell(r['dice'], '.3f'):>7}")
    return "\n".join(lines)
