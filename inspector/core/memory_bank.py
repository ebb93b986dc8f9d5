"""Memory-bank sampling and nearest-neighbour search (PatchCore, numpy only).

A sampler picks which training patch features go into the memory bank. Both samplers are
seeded and deterministic, report progress and honour cancellation."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import Cancelled, TrainingError

Progress = Callable[[str, int, int], None]
PROJECTION_DIM = 32  # random projection used to measure distances while picking the coreset
_CHUNK = 1 << 24  # elements per distance block (64 MB of float32)


def no_progress(stage: str, done: int, total: int) -> None:
    pass


def bank_size(n: int, ratio: float) -> int:
    if not 0.0 < ratio <= 1.0:
        raise TrainingError(f"The sampling ratio must be in (0, 1], got {ratio}.")
    return max(1, min(n, int(round(n * ratio))))


def _targets(n: int, ratio: float, first: np.ndarray | None) -> tuple[np.ndarray, int, int]:
    """`first` as an index array, how many picks come from it, and how many in all."""
    first = np.arange(n) if first is None else np.asarray(first, np.int64)
    return first, bank_size(len(first), ratio), bank_size(n, ratio)


def random_sample(features: np.ndarray, ratio: float, seed: int, progress: Progress = no_progress,
                  cancel=None, first: np.ndarray | None = None) -> np.ndarray:
    """Indices of a uniform random subset of the patch features, in pick order (see `sample_indices`)."""
    n = len(features)
    first, k_first, k = _targets(n, ratio, first)
    rng = np.random.default_rng(seed)
    head = rng.choice(first, size=k_first, replace=False)
    tail = rng.choice(np.setdiff1d(np.arange(n), head), size=k - k_first, replace=False)
    progress("sampling", 1, 1)
    return np.concatenate([head, tail])


def greedy_coreset(features: np.ndarray, ratio: float, seed: int, progress: Progress = no_progress,
                   cancel=None, first: np.ndarray | None = None) -> np.ndarray:
    """Indices of a k-center greedy coreset, in pick order: each step adds the patch farthest
    from every patch chosen so far, measured on a seeded random projection of the features
    (see `sample_indices` for `first`)."""
    n = len(features)
    first, k_first, k = _targets(n, ratio, first)
    rng = np.random.default_rng(seed)
    dim = min(PROJECTION_DIM, features.shape[1])
    projection = rng.standard_normal((features.shape[1], dim)).astype(np.float32)
    projected = np.ascontiguousarray(features @ projection)
    sq = squared_norms(projected)
    min_dist = np.full(n, np.inf, dtype=np.float32)
    chosen = np.empty(k, dtype=np.int64)
    step = max(1, k // 100)
    for i in range(k):
        if i == 0:
            chosen[i] = first[rng.integers(len(first))]
        elif i < k_first:
            chosen[i] = first[int(np.argmax(min_dist[first]))]
        else:
            chosen[i] = int(np.argmax(min_dist))
        c = chosen[i]
        dist = projected @ projected[c]
        dist *= -2.0
        dist += sq
        dist += sq[c]
        np.minimum(min_dist, dist, out=min_dist)
        if i % step == 0 or i == k - 1:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Training cancelled.")
            progress("sampling", i + 1, k)
    return chosen


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {"greedy": greedy_coreset, "random": random_sample}


def sample_indices(features: np.ndarray, sampler: str, ratio: float, seed: int,
                   progress: Progress = no_progress, cancel=None, first: np.ndarray | None = None) -> np.ndarray:
    """Which rows of `features` (N, C) form the memory bank, in pick order. With `first` (row
    indices), the first picks are a bank of those rows alone, as large as the ratio gives them,
    which the later picks extend to a bank of all rows: one pass yields a calibration bank
    without some images and the final bank with them."""
    try:
        pick = SAMPLERS[sampler]
    except KeyError:
        raise TrainingError(f"Unknown sampler '{sampler}'. Choose one of: {', '.join(SAMPLERS)}.") from None
    return pick(features, ratio, seed, progress, cancel, first)


def sample(features: np.ndarray, sampler: str, ratio: float, seed: int,
           progress: Progress = no_progress, cancel=None) -> np.ndarray:
    """The memory bank: the sampled rows of `features` (N, C)."""
    return np.ascontiguousarray(features[sample_indices(features, sampler, ratio, seed, progress, cancel)])


def squared_norms(rows: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", rows, rows)


def nearest_distance(queries: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray | None = None) -> np.ndarray:
    """Exact Euclidean distance from each query row to its nearest memory-bank row."""
    if bank_sq is None:
        bank_sq = squared_norms(bank)
    out = np.empty(len(queries), dtype=np.float32)
    rows = max(1, _CHUNK // max(1, len(bank)))
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows]
        d = q @ bank.T
        d *= -2.0
        d += bank_sq
        best = d.min(axis=1) + squared_norms(q)
        out[start:start + rows] = np.sqrt(np.maximum(best, 0.0))
    return out
