"""Learning from confirmed defects, in numpy (no torch), on what the engine already computes: the frozen backbone's
patch features and each patch's distance to the memory bank.

Two small heads share one per-patch input (`patch_inputs`): the standardised patch features and the patch's bank
distance with its 3 x 3 neighbourhood (mean and max), in units of the good images' median image score, so the heads
see "how unusual for this product", whatever the product.

- The **defect classifier** (a good/defect verdict) is a linear head: a logit per patch, pooled over the image by
  log-sum-exp (a smooth maximum), so its patch logits are its class-activation map. Trained with a loss weighted
  against the class imbalance and L2; its threshold is set on out-of-fold logits (every good and known defect
  scored by heads trained without it) above every good image, so it rejects no good part the folds saw.
- The **segmentation head** is a small MLP on the same inputs, trained on the known defects' masks (good images:
  all-zero masks) with binary cross-entropy plus Dice; its patch logits are upsampled to the working size: the
  defect's mask.

Both are arrays (`Heads.arrays`) saved beside the memory bank; `check_known_defects` refuses the inputs that would
make a silently worse model."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..errors import Cancelled, TrainingError
from .features import STRIDE

MIN_DEFECTS = 5  # fewer known defects cannot set a threshold on held-out ones
MIN_KINDS = 2  # one kind only: the classifier would learn that kind, not "a defect"
FOLDS = 5
MAX_GOOD_IMAGES = 120  # good images the heads learn from (seeded pick): training time stays bounded
SEGMENTER_GOOD_PATCHES = 24_000  # good patches the segmentation head learns from (all-zero masks)
L2 = 1e-3
CLASSIFIER_STEPS = 150  # as good as 300 out of fold on bottle, grid, magnetic_tile; half the time
SEGMENTER_STEPS = 600
HIDDEN = 0  # linear: an MLP (16) fitted the known defects closer and held-back ones worse (grid)
LEARNING_RATE = 0.05
DICE_WEIGHT = 3.0
DISTANCE_INPUTS = 3
COMPONENTS = 96  # principal components of the standardised patch features the heads see
SEPARABLE_AUROC = 0.75  # below this for the bank and the classifier alike,
SEPARABLE_CAUGHT = 0.25  # with fewer caught than this, the defects look like good parts
# How a defect's mask is drawn (`Heads.mask_map`): the segmentation probability over an absolute
# threshold (models saved before the rule was chosen), or the segmentation's or the bank's map
# over a share of its own peak; training picks the one with the best Dice on the known defects
# out of fold (the bank's map follows thin defects better on grid, the head's on bottle).
MASK_ABSOLUTE, MASK_SEGMENTATION_PEAK, MASK_BANK_PEAK = 0, 1, 2


def patch_inputs(features: np.ndarray, distances: np.ndarray, mean: np.ndarray, projection: np.ndarray,
                 scale: float) -> np.ndarray:
    """(h, w, C) features and (h, w) bank distances -> (h * w, COMPONENTS + 3) float32 head inputs: the features'
    principal components (`projection` (C, P) folds in the standardisation) and the distances."""
    d = (distances / scale).astype(np.float32)
    near_mean = cv2.blur(d, (3, 3), borderType=cv2.BORDER_REPLICATE)
    near_max = cv2.dilate(d, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    f = (features.reshape(-1, features.shape[-1]).astype(np.float32) - mean) @ projection
    return np.concatenate([f, np.stack([d, near_mean, near_max], -1).reshape(-1, DISTANCE_INPUTS)], 1)


def mask_on_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A working-size bool mask -> the share of each patch it covers, (h, w) float32."""
    return cv2.resize(mask.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def upsample(grid_logits: np.ndarray) -> np.ndarray:
    """(h, w) patch logits -> (8h, 8w) probabilities (bilinear on the logits: smooth contours)."""
    h, w = grid_logits.shape
    up = cv2.resize(grid_logits.astype(np.float32), (w * STRIDE, h * STRIDE), interpolation=cv2.INTER_LINEAR)
    return _sigmoid(up)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def probability(logit: float) -> float:
    """A head's logit as the probability of a defect (as its maps are)."""
    return float(_sigmoid(logit))


# ---- the heads -------------------------------------------------------------------------

def _forward(params: dict, x: np.ndarray):
    """Patch logits (n,) and what the backward pass needs; a linear head without 'w1'."""
    if "w1" not in params:
        return x @ params["w"] + params["b"][0], None
    hidden = x @ params["w1"] + params["b1"]
    np.maximum(hidden, 0.0, out=hidden)
    return hidden @ params["w"] + params["b"][0], hidden


def _backward(params: dict, x: np.ndarray, hidden, g: np.ndarray) -> dict:
    """Gradients of the parameters from the patch logits' gradient g (n,), with L2 on weights."""
    if hidden is None:
        return {"w": x.T @ g + L2 * params["w"], "b": np.array([g.sum()], np.float32)}
    gh = np.outer(g, params["w"])
    gh *= hidden > 0
    return {"w": hidden.T @ g + L2 * params["w"], "b": np.array([g.sum()], np.float32),
            "w1": x.T @ gh + L2 * params["w1"], "b1": gh.sum(0)}


def _init(dim: int, hidden: int, rng: np.random.Generator) -> dict:
    if not hidden:
        return {"w": np.zeros(dim, np.float32), "b": np.zeros(1, np.float32)}
    return {"w1": (rng.standard_normal((dim, hidden)) / np.sqrt(dim)).astype(np.float32),
            "b1": np.zeros(hidden, np.float32),
            "w": (rng.standard_normal(hidden) / np.sqrt(hidden)).astype(np.float32),
            "b": np.zeros(1, np.float32)}


def _adam(params: dict, loss_grad, steps: int, cancel: threading.Event | None) -> dict:
    """Full-batch Adam on the data's loss; `loss_grad(params)` -> (loss, gradient of the logits' loss)."""
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2 = 0.9, 0.999
    for t in range(1, steps + 1):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Training cancelled; the previous model is unchanged.")
        grads = loss_grad(params)
        for k, g in grads.items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            params[k] = (params[k] - LEARNING_RATE * (m[k] / (1 - b1 ** t))
                         / (np.sqrt(v[k] / (1 - b2 ** t)) + 1e-8)).astype(np.float32)
    return params


def _pool(z: np.ndarray, starts: np.ndarray):
    """Log-sum-exp mean of each image's patch logits (a smooth maximum) and the softmax weights."""
    top = np.maximum.reduceat(z, starts)
    counts = np.diff(np.append(starts, len(z)))
    e = np.exp(z - np.repeat(top, counts))
    total = np.add.reduceat(e, starts)
    return top + np.log(total / counts), e / np.repeat(total, counts), counts


def image_logit(patch_logits: np.ndarray) -> float:
    """The classifier's image logit from its (h, w) patch logits (its class-activation map)."""
    z = patch_logits.ravel().astype(np.float64)
    top = z.max()
    return float(top + np.log(np.mean(np.exp(z - top))))


def fit_classifier(x: np.ndarray, starts: np.ndarray, labels: np.ndarray, seed: int,
                   cancel: threading.Event | None = None) -> dict:
    """A linear head whose pooled patch logits separate the images (labels 1 defect, 0 good),
    the loss weighted so that defects and good images weigh the same in all."""
    weights = np.where(labels == 1, 0.5 / max(1, labels.sum()), 0.5 / max(1, (labels == 0).sum())).astype(np.float32)

    def loss_grad(params):
        z, hidden = _forward(params, x)
        s, soft, counts = _pool(z, starts)
        ds = weights * (_sigmoid(s) - labels)
        return _backward(params, x, hidden, (np.repeat(ds, counts) * soft).astype(np.float32))

    return _adam(_init(x.shape[1], 0, np.random.default_rng(seed)), loss_grad, CLASSIFIER_STEPS, cancel)


def fit_segmenter(x: np.ndarray, target: np.ndarray, starts: np.ndarray, defect: np.ndarray, seed: int,
                  cancel: threading.Event | None = None) -> dict:
    """A small MLP whose patch logits give each patch's share of defect (`target`), trained with
    class-balanced binary cross-entropy plus the soft Dice loss of each defect image."""
    pos = float(target.sum())
    weight = np.where(target > 0, 0.5 / max(pos, 1.0), 0.5 / max(len(target) - pos, 1.0)).astype(np.float32)
    counts = np.diff(np.append(starts, len(x)))
    image = np.repeat(np.arange(len(starts)), counts)
    in_dice = np.repeat(defect, counts)
    n_dice = max(1, int(defect.sum()))

    def loss_grad(params):
        z, hidden = _forward(params, x)
        p = _sigmoid(z)
        g = weight * (p - target)
        inter = np.bincount(image, p * target, len(starts))
        total = np.bincount(image, p + target, len(starts)) + 1e-6
        dd = (2 * target / total[image] - 2 * inter[image] / total[image] ** 2)  # d Dice / d p
        g -= DICE_WEIGHT * in_dice * dd * p * (1 - p) / n_dice
        return _backward(params, x, hidden, g.astype(np.float32))

    return _adam(_init(x.shape[1], HIDDEN, np.random.default_rng(seed)), loss_grad, SEGMENTER_STEPS, cancel)


def patch_logits(params: dict, x: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    return _forward(params, x)[0].reshape(grid)


# ---- known defects and the trained heads -------------------------------------------------

@dataclass
class Example:
    """One image the heads learn from: its patch features (h, w, C), bank distances (h, w) -
    for a good image, to a bank without it (the calibration's) - its kind ('good' for good
    parts) and its mask at the working size (None: a defect without a mask)."""
    features: np.ndarray
    distances: np.ndarray
    kind: str
    mask: np.ndarray | None = None
    name: str = ""
    score: float | None = None  # the bank's image score (in the region); None: the largest distance

    @property
    def bank_score(self) -> float:
        return float(self.distances.max()) if self.score is None else self.score

    @property
    def defect(self) -> bool:
        return self.kind != "good"


def check_known_defects(defects: list[Example]) -> None:
    """Refuse, with what to do, known defects that would make a worse model silently: too few, one kind only, masks
    that do not fit their images (good parts given as defects: see `check_separable`, after the folds)."""
    if len(defects) < MIN_DEFECTS:
        raise TrainingError(f"Only {len(defects)} known defect(s); learning from defects needs at least "
                            f"{MIN_DEFECTS} (of at least {MIN_KINDS} kinds) to set its threshold on defects "
                            f"it did not learn from. Mark more parts as defects, then train again.")
    kinds = sorted({d.kind for d in defects})
    if len(kinds) < MIN_KINDS:
        raise TrainingError(f"The known defects are all of one kind ('{kinds[0]}'): a classifier would learn that "
                            f"kind and not a defect. Add defects of at least {MIN_KINDS} kinds (one subfolder "
                            f"each), then train again.")
    for d in defects:
        grid = d.features.shape[:2]
        if d.mask is not None and tuple(d.mask.shape) != (grid[0] * STRIDE, grid[1] * STRIDE):
            raise TrainingError(f"The mask of known defect {d.name or d.kind} is {d.mask.shape[1]} x {d.mask.shape[0]} "
                                f"at the working size, but its image is {grid[1] * STRIDE} x {grid[0] * STRIDE}: "
                                f"give each defect the mask of its own image (same size).")


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """The chance that a positive scores above a negative (ties count half)."""
    diff = positives[:, None] - negatives[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def check_separable(good_bank, defect_bank, good_logits, defect_logits, bank_threshold: float,
                    logit_threshold: float) -> None:
    """Refuse known defects that neither the bank nor the classifier (out of fold) tells from the
    good images: a folder of good parts given as defects would make a classifier of noise."""
    bank, classifier = auroc(good_bank, defect_bank), auroc(good_logits, defect_logits)
    caught = np.mean((defect_bank >= bank_threshold) | (defect_logits >= logit_threshold))
    if max(bank, classifier) < SEPARABLE_AUROC and caught < SEPARABLE_CAUGHT:
        raise TrainingError(f"The {len(defect_bank)} known defects look like the good parts to the memory bank "
                            f"(AUROC {bank:.2f}) and to a classifier trained without them (AUROC {classifier:.2f}; "
                            f"{caught:.0%} caught): "
                            f"is this a folder of good parts? Give images of defects, or teach them as good parts.")


@dataclass
class Heads:
    """The trained heads and their input normalisation (data only: `arrays`)."""
    mean: np.ndarray
    projection: np.ndarray
    scale: float
    classifier: dict
    classifier_threshold: float  # on the image logit
    classifier_spread: float  # robust spread of the good images' out-of-fold logits
    segmenter: dict | None
    segment_threshold: float  # on the segmentation probability (MASK_ABSOLUTE) or a share of the map's peak
    counts: dict = field(default_factory=dict)
    mask_rule: int = MASK_ABSOLUTE

    def mask_map(self, segmentation: np.ndarray | None, bank_map: np.ndarray) -> tuple[np.ndarray, float] | None:
        """(the map a defect's mask is drawn from, its threshold), None: the bank's own pixel threshold."""
        if self.mask_rule == MASK_BANK_PEAK:
            return bank_map, self.segment_threshold * float(bank_map.max())
        if segmentation is None:
            return None
        peak = float(segmentation.max()) if self.mask_rule == MASK_SEGMENTATION_PEAK else 1.0
        return segmentation, self.segment_threshold * peak

    def inputs(self, features: np.ndarray, distances: np.ndarray) -> np.ndarray:
        return patch_inputs(features, distances, self.mean, self.projection, self.scale)

    def classify(self, x: np.ndarray, grid: tuple[int, int]) -> tuple[float, np.ndarray]:
        """(image logit, (h, w) patch logits: the class-activation map)."""
        cam = patch_logits(self.classifier, x, grid)
        return image_logit(cam), cam

    def segment(self, x: np.ndarray, grid: tuple[int, int]) -> np.ndarray | None:
        """The defect probability at the working size (8h, 8w), None without a segmentation head."""
        return None if self.segmenter is None else upsample(patch_logits(self.segmenter, x, grid))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "projection": self.projection,
               "scalars": np.array([self.scale, self.classifier_threshold, self.classifier_spread,
                                    self.segment_threshold, self.mask_rule], np.float64)}
        out |= {f"classifier.{k}": v for k, v in self.classifier.items()}
        out |= {f"segmenter.{k}": v for k, v in (self.segmenter or {}).items()}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], counts: dict | None = None) -> Heads:
        scale, threshold, spread, seg_threshold, *rule = (float(v) for v in arrays["scalars"])
        part = lambda name: {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(name + ".")}  # noqa: E731
        heads = cls(arrays["mean"], arrays["projection"], scale, part("classifier"), threshold, spread,
                    part("segmenter") or None, seg_threshold, counts or {}, int(rule[0]) if rule else MASK_ABSOLUTE)
        if heads.mask_rule not in (MASK_ABSOLUTE, MASK_SEGMENTATION_PEAK, MASK_BANK_PEAK):
            raise ValueError(f"the defect heads' mask rule {heads.mask_rule} is unknown")
        dim = heads.projection.shape[1] + DISTANCE_INPUTS
        probe = np.zeros((1, dim), np.float32)
        for head in (heads.classifier, heads.segmenter or {"w": np.zeros(dim, np.float32), "b": np.zeros(1)}):
            if not set(head) <= {"w", "b", "w1", "b1"} or _forward(head, probe)[0].shape != (1,):
                raise ValueError("the defect heads' arrays do not fit together")
        if not all(np.isfinite(v).all() for v in arrays.values()) or heads.mean.shape != heads.projection.shape[:1]:
            raise ValueError("the defect heads' arrays do not fit together or are not finite")
        return heads


def _mask_rule(seg_probs: list[np.ndarray], bank_maps: list[np.ndarray], masks: list[np.ndarray]) -> tuple[int, float]:
    """(mask rule, share of the peak) with the best mean Dice over these defect images (segmentation
    out of fold; the bank never saw them); ties keep the segmentation."""
    best, choice = -1.0, (MASK_SEGMENTATION_PEAK, 0.5)
    for rule, maps in ((MASK_SEGMENTATION_PEAK, seg_probs), (MASK_BANK_PEAK, bank_maps)):
        peaks = [float(a.max()) for a in maps]
        for t in np.arange(0.2, 0.96, 0.05):
            values = [2 * np.sum((a >= t * top) & m) / max(1, (a >= t * top).sum() + m.sum())
                      for a, top, m in zip(maps, peaks, masks)]
            if np.mean(values) > best + 1e-9:
                best, choice = float(np.mean(values)), (rule, float(t))
    return choice


def train_heads(good: list[Example], defects: list[Example], good_score: float, good_threshold: float,
                seed: int = 0, cancel: threading.Event | None = None) -> Heads:
    """Train the classifier and (when defects have masks) the segmentation head; thresholds from
    out-of-fold predictions (FOLDS folds over good images and known defects alike)."""
    from .scoring import anomaly_map  # scoring imports this module

    check_known_defects(defects)
    rng = np.random.default_rng(seed)
    if len(good) > MAX_GOOD_IMAGES:
        good = [good[i] for i in np.sort(rng.choice(len(good), MAX_GOOD_IMAGES, replace=False))]
    feats = np.concatenate([g.features.reshape(-1, g.features.shape[-1]) for g in good]).astype(np.float32)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    sample = (feats[rng.random(len(feats)) < min(1.0, 50_000 / len(feats))] - mean) / std
    values, vectors = np.linalg.eigh(sample.T @ sample / len(sample))
    top = vectors[:, ::-1][:, :COMPONENTS] / np.sqrt(np.maximum(values[::-1][:COMPONENTS], 1e-6))
    projection = (top / std[:, None]).astype(np.float32)  # standardise, project, whiten
    del feats, sample
    scale = max(good_score, 1e-6)
    examples = good + defects
    labels = np.array([int(e.defect) for e in examples], np.float32)
    xs = [patch_inputs(e.features, e.distances, mean, projection, scale) for e in examples]
    # The segmentation head learns from every patch of the defects with a mask and a seeded share
    # of the good images' patches (all-zero masks): (inputs, target) per image.
    share = min(1.0, SEGMENTER_GOOD_PATCHES / max(1, sum(len(xs[i]) for i in range(len(good)))))
    seg_data = {i: (xs[i][rng.random(len(xs[i])) < share], None) for i in range(len(good))}
    seg_data |= {i: (xs[i], mask_on_grid(e.mask, e.features.shape[:2]).ravel())
                 for i, e in enumerate(examples) if e.defect and e.mask is not None}

    def fit_on(idx):
        x = np.concatenate([xs[i] for i in idx])
        starts = np.cumsum([0] + [len(xs[i]) for i in idx[:-1]]).astype(np.int64)
        cls_params = fit_classifier(x, starts, labels[idx], seed, cancel)
        seg_idx = [i for i in idx if i in seg_data]
        if not any(seg_data[i][1] is not None for i in seg_idx):
            return cls_params, None
        xsg = np.concatenate([seg_data[i][0] for i in seg_idx])
        sst = np.cumsum([0] + [len(seg_data[i][0]) for i in seg_idx[:-1]]).astype(np.int64)
        target = np.concatenate([np.zeros(len(seg_data[i][0]), np.float32) if seg_data[i][1] is None
                                 else seg_data[i][1] for i in seg_idx])
        return cls_params, fit_segmenter(xsg, target, sst, labels[seg_idx].astype(bool), seed, cancel)

    # Out-of-fold: each image scored by heads trained without its fold (defects and goods split apart).
    folds = [np.concatenate(parts) for parts in zip(
        *(np.array_split(rng.permutation(np.flatnonzero(labels == c)), FOLDS) for c in (0, 1)))]
    oof = np.empty(len(examples))
    seg_probs, bank_maps, seg_masks = [], [], []
    for fold in folds:
        train_idx = np.setdiff1d(np.arange(len(examples)), fold).tolist()
        cls_params, seg_params = fit_on(train_idx)
        for i in fold:
            grid = examples[i].features.shape[:2]
            oof[i] = image_logit(patch_logits(cls_params, xs[i], grid))
            if seg_params is not None and examples[i].defect and examples[i].mask is not None:
                seg_probs.append(upsample(patch_logits(seg_params, xs[i], grid)))
                bank_maps.append(anomaly_map(examples[i].distances))
                seg_masks.append(examples[i].mask)
    good_oof, defect_oof = oof[labels == 0], oof[labels == 1]
    # Above every good image the bank passes (the verdict of both then rejects no good part the bank
    # alone would pass), on the good side of the gap to the known defects above them: a defect
    # milder than the known ones still counts.
    passed = np.array([g.bank_score < good_threshold for g in good])
    top_good = float(good_oof[passed].max() if passed.any() else good_oof.max())
    above = defect_oof[defect_oof > top_good]
    spread = float(1.4826 * np.median(np.abs(good_oof - np.median(good_oof)))) or float(good_oof.std()) or 1.0
    threshold = top_good + (min(spread, (float(above.min()) - top_good) / 2) if len(above) else spread)
    check_separable(np.array([g.bank_score for g in good]), np.array([d.bank_score for d in defects]),
                    good_oof, defect_oof, good_threshold, threshold)
    cls_params, seg_params = fit_on(list(range(len(examples))))
    mask_rule, seg_threshold = _mask_rule(seg_probs, bank_maps, seg_masks) if seg_probs else (MASK_ABSOLUTE, 0.5)
    counts = {"good_images": len(good), "known_defects": len(defects),
              "kinds": len({d.kind for d in defects}),
              "masks": sum(d.mask is not None for d in defects),
              "out_of_fold_escapes": int((defect_oof < threshold).sum())}
    return Heads(mean.astype(np.float32), projection, scale, cls_params, threshold, spread,
                 seg_params, seg_threshold, counts, mask_rule)


# ---- the verdict of both, and accepting small defects -------------------------------------

def combined_margin(bank_score: float, bank_threshold: float, bank_spread: float, logit: float, heads: Heads) -> float:
    """How far over its threshold the more alarmed of the two checks is, each in robust spreads of
    its good images' scores: a part is NG when this is >= 0 (the bank's score over its threshold
    OR the classifier's logit over its own). Chosen by measurement (evaluate --known-defects)."""
    return max((bank_score - bank_threshold) / bank_spread,
               (logit - heads.classifier_threshold) / heads.classifier_spread)


def area_in_mm2(area_px: float, mm_per_px: float | None) -> float | None:
    """A region's area in mm2 with the engineer's scale (mm per camera pixel), None without one."""
    return None if mm_per_px is None else area_px * mm_per_px * mm_per_px


def accept_by_size(regions: list, min_defect_area: float, mm_per_px: float | None = None) -> tuple[list, list]:
    """(regions that reject the part, regions small enough to accept): `min_defect_area` in mm2
    with a scale, in camera pixels without one; 0 accepts none."""
    size = (lambda r: area_in_mm2(r.area, mm_per_px)) if mm_per_px is not None else (lambda r: r.area)
    rejecting = [r for r in regions if size(r) >= min_defect_area]
    return rejecting, [r for r in regions if size(r) < min_defect_area]
