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


def random_sample(features: np.ndarray, ratio: float, seed: int, progress: Progress = no_progress,
                  cancel=None) -> np.ndarray:
    """Indices of a uniform random subset of the patch features."""
    n = len(features)
    k = bank_size(n, ratio)
    progress("sampling", 1, 1)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def greedy_coreset(features: np.ndarray, ratio: float, seed: int, progress: Progress = no_progress,
                   cancel=None) -> np.ndarray:
    """Indices of a k-center greedy coreset: each step adds the patch farthest from every patch
    chosen so far, measured on a seeded random projection of the features."""
    n = len(features)
    k = bank_size(n, ratio)
    if k == n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    dim = min(PROJECTION_DIM, features.shape[1])
    projection = rng.standard_normal((features.shape[1], dim)).astype(np.float32)
    projected = np.ascontiguousarray(features @ projection)
    sq = np.einsum("ij,ij->i", projected, projected)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(n)
    min_dist = np.full(n, np.inf, dtype=np.float32)
    step = max(1, k // 100)
    for i in range(k):
        if i:
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
    return np.sort(chosen)


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {"greedy": greedy_coreset, "random": random_sample}


def sample(features: np.ndarray, sampler: str, ratio: float, seed: int,
           progress: Progress = no_progress, cancel=None) -> np.ndarray:
    """The memory bank: the sampled rows of `features` (N, C)."""
    try:
        pick = SAMPLERS[sampler]
    except KeyError:
        raise TrainingError(f"Unknown sampler '{sampler}'. Choose one of: {', '.join(SAMPLERS)}.") from None
    return np.ascontiguousarray(features[pick(features, ratio, seed, progress, cancel)])


def nearest_distance(queries: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray | None = None) -> np.ndarray:
    """Exact Euclidean distance from each query row to its nearest memory-bank row."""
    if bank_sq is None:
        bank_sq = np.einsum("ij,ij->i", bank, bank)
    out = np.empty(len(queries), dtype=np.float32)
    rows = max(1, _CHUNK // max(1, len(bank)))
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows]
        d = q @ bank.T
        d *= -2.0
        d += bank_sq
        best = d.min(axis=1) + np.einsum("ij,ij->i", q, q)
        out[start:start + rows] = np.sqrt(np.maximum(best, 0.0))
    return out
