"""An autoencoder on the backbone's patch features (as DFR): each patch's feature vector, standardised, goes through a
small bottleneck network trained on good patches; a patch's reconstruction error is its score, and the anomaly map
and image score follow from the patch scores as PatchCore's do (core.scoring.score_patches)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...core.memory_bank import Progress
from ...core.scoring import score_patches
from .knn import BackboneMethod
from .networks import train_network

HIDDEN, LATENT = 128, 32
BATCH = 2048
PATCHES_PER_EPOCH = 100_000
VALIDATION_PATCHES = 50_000


class FeatureAE(BackboneMethod):
    name, needs_torch = "feature-ae", True

    def learn(self, paths: list[Path], held_out: list[np.ndarray], progress: Progress,
              cancel: threading.Event | None) -> None:
        torch = self._torch
        features = self.good_features(paths, progress, cancel)
        c = features[0].shape[-1]
        patches = np.concatenate([f.reshape(-1, c) for f in features])  # float16
        total, total_sq = np.zeros(c), np.zeros(c)
        for f in features:  # image by image: a float64 copy of every patch would need gigabytes
            f = f.reshape(-1, c).astype(np.float64)
            total, total_sq = total + f.sum(axis=0), total_sq + (f * f).sum(axis=0)
        mean = total / len(patches)
        self._mean = mean.astype(np.float32)
        self._std = (np.sqrt(np.maximum(total_sq / len(patches) - mean * mean, 0.0)) + 1e-6).astype(np.float32)
        rng = np.random.default_rng(self.settings.seed)
        held = np.concatenate([self.patch_features(image).reshape(-1, c) for image in held_out])
        held = held[rng.permutation(len(held))[:VALIDATION_PATCHES]]
        validation = [self._standardised(held[i:i + 8 * BATCH]) for i in range(0, len(held), 8 * BATCH)]

        def batches(epoch: int):
            pick = np.random.default_rng([self.settings.seed, epoch]).permutation(len(patches))[:PATCHES_PER_EPOCH]
            for i in range(0, len(pick), BATCH):
                yield self._standardised(patches[np.sort(pick[i:i + BATCH])])

        nn = torch.nn
        torch.manual_seed(self.settings.seed)
        self.net = nn.Sequential(nn.Linear(c, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, LATENT), nn.ReLU(),
                                 nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, c))
        self.training = train_network(self.net, lambda net, x: ((net(x) - x) ** 2).mean(), batches, validation,
                                      self.name, progress, cancel, self.max_epochs)

    def _standardised(self, patches: np.ndarray):
        return self._torch.from_numpy((patches.astype(np.float32) - self._mean) / self._std)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        f = self.patch_features(image)
        x = self._standardised(f.reshape(-1, f.shape[-1]))
        with self._torch.no_grad():
            error = ((self.net(x) - x) ** 2).mean(dim=1).sqrt().numpy()
        return score_patches(error.reshape(f.shape[:2]).astype(np.float32))
