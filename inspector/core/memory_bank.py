"""Memory-bank sampling and nearest-neighbour search (PatchCore, numpy only).

A sampler picks which training patch features go into the memory bank (k of them). Both
samplers are seeded and deterministic, report progress and honour cancellation."""
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


def random_sample(features: np.ndarray, k: int, seed: int, progress: Progress = no_progress, cancel=None) -> np.ndarray:
    """Indices of k uniformly drawn patch features, in pick order."""
    progress("sampling", 1, 1)
    return np.random.default_rng(seed).choice(len(features), size=k, replace=False)


def greedy_coreset(features: np.ndarray, k: int, seed: int, progress: Progress = no_progress,
                   cancel=None) -> np.ndarray:
    """Indices of a k-center greedy coreset of k patch features, in pick order: each step adds
    the patch farthest from every patch chosen so far, measured on a seeded random projection."""
    n = len(features)
    rng = np.random.default_rng(seed)
    dim = min(PROJECTION_DIM, features.shape[1])
    projection = rng.standard_normal((features.shape[1], dim)).astype(np.float32)
    projected = np.ascontiguousarray(features @ projection)
    sq = squared_norms(projected)
    min_dist = np.full(n, np.inf, dtype=np.float32)
    chosen = np.empty(k, dtype=np.int64)
    step = max(1, k // 100)
    for i in range(k):
        c = chosen[i] = int(rng.integers(n)) if i == 0 else int(np.argmax(min_dist))
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


def sample_indices(features: np.ndarray, sampler: str, k: int, seed: int,
                   progress: Progress = no_progress, cancel=None) -> np.ndarray:
    """Which k rows of `features` (N, C) form the memory bank, in pick order."""
    try:
        pick = SAMPLERS[sampler]
    except KeyError:
        raise TrainingError(f"Unknown sampler '{sampler}'. Choose one of: {', '.join(SAMPLERS)}.") from None
    return pick(features, min(k, len(features)), seed, progress, cancel)


def sample(features: np.ndarray, sampler: str, ratio: float, seed: int,
           progress: Progress = no_progress, cancel=None) -> np.ndarray:
    """The memory bank: `ratio` of the rows of `features` (N, C), sampled."""
    k = bank_size(len(features), ratio)
    return np.ascontiguousarray(features[sample_indices(features, sampler, k, seed, progress, cancel)])


# A memory bank of many good images is built in two steps, so that its cost grows with the pixel
# count and not with its square: each image offers candidates (its own coreset, POOL_FACTOR times
# its share of the bank, fewer when that would make more than POOL_LIMIT candidates in all), and
# the bank is the coreset of the candidates of the images it is made of. An image adds at most BANK_PATCHES_PER_IMAGE patches' worth to the bank (a 512 x 512 working
# image): the variety of good patches grows with the parts seen, not with their pixels, and every
# patch of an inspected image is searched against the bank, so a bank that grew with the image
# would make the work grow with the square of its pixels.
BANK_PATCHES_PER_IMAGE = 4096
POOL_FACTOR = 10
POOL_LIMIT = 50_000


def bank_entries(patch_counts, ratio: float) -> int:
    """The memory bank's size for images of these patch counts at the sampling ratio."""
    return bank_size(int(sum(min(int(p), BANK_PATCHES_PER_IMAGE) for p in patch_counts)), ratio)


def candidates(features: np.ndarray, sampler: str, ratio: float, seed: int, images: int = 1) -> np.ndarray:
    """One image's candidates for a memory bank of `images` images: rows of its patch features (P, C)."""
    share = bank_entries([len(features)], ratio)
    k = min(len(features), max(share, min(share * POOL_FACTOR, POOL_LIMIT // images)))
    return np.ascontiguousarray(features[sample_indices(features, sampler, k, seed)], dtype=np.float32)


def squared_norms(rows: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", rows, rows)


def search_index(bank: np.ndarray) -> np.ndarray:
    """The memory bank (N, C) as `nearest_distance` searches it: (C + 1, N), -2 times the bank transposed over each
    entry's squared norm, so that one matrix product of a query with a 1 appended gives its squared distance to every
    entry less its own squared norm (no pass over the distances to scale them and add the norms: 10-25 % faster)."""
    bank = np.asarray(bank, np.float32)
    return np.ascontiguousarray(np.concatenate([-2.0 * bank, squared_norms(bank)[:, None]], 1).T)


def nearest_distance(queries: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from each query row (M, C) to its nearest memory-bank entry (`search_index`)."""
    out = np.empty(len(queries), dtype=np.float32)
    rows = max(1, _CHUNK // max(1, index.shape[1]))
    ones = np.ones((min(rows, len(queries)), 1), np.float32)
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows]
        best = (np.concatenate([q, ones[:len(q)]], 1) @ index).min(axis=1) + squared_norms(q)
        out[start:start + rows] = np.sqrt(np.maximum(best, 0.0))
    return out
