"""Convolutional autoencoders on pixels: `ae` (trained with the mean squared error), `ae-ssim` (trained with the
structural dissimilarity, 1 - SSIM) and `unet-ae` (skip connections from each encoder stage to the decoder, MSE).
Images keep their aspect ratio at a small working size (the median good image's shorter side at PIXEL_SIDE px
unless a defect size is given); the network is fully convolutional, trained on random crops of one size and run on
whole images. The anomaly map is the reconstruction error (per pixel, or 1 - SSIM), smoothed as PatchCore's; the
image score is its largest value."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from ...core.features import SIDE_MULTIPLE
from ...core.memory_bank import Progress
from ...core.scoring import SMOOTHING_SIGMA
from ...core.training import with_defect_size
from .base import Method, load_images
from .networks import train_network

PIXEL_SIDE = 128
CROP = 128  # the crops' side in working pixels (at most the smallest image's shorter side)
WIDTHS = (3, 32, 64, 128, 128)  # channels at full, 1/2, 1/4, 1/8 and 1/16 resolution
LATENT = 16  # channels of the bottleneck at 1/16 resolution
BATCH = 16
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def _network(torch, skips: bool):
    nn = torch.nn

    class ConvAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.ModuleList(
                nn.Sequential(nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2))
                for a, b in zip(WIDTHS, WIDTHS[1:]))
            self.bottleneck = nn.Sequential(nn.Conv2d(WIDTHS[-1], LATENT, 1), nn.LeakyReLU(0.2),
                                            nn.Conv2d(LATENT, WIDTHS[-1], 1), nn.LeakyReLU(0.2))
            grow = 2 if skips else 1
            self.up = nn.ModuleList(
                nn.Sequential(nn.ConvTranspose2d(grow * b, a, 4, 2, 1), nn.BatchNorm2d(a), nn.LeakyReLU(0.2))
                if i else nn.Sequential(nn.ConvTranspose2d(grow * b, a, 4, 2, 1), nn.Sigmoid())
                for i, (a, b) in reversed(list(enumerate(zip(WIDTHS, WIDTHS[1:])))))

        def forward(self, x):
            stages = []
            for down in self.down:
                x = down(x)
                stages.append(x)
            x = self.bottleneck(x)
            for up, stage in zip(self.up, reversed(stages)):
                x = up(torch.cat([x, stage], dim=1) if skips else x)
            return x

    return ConvAE()


def _ssim(torch, a, b):
    """The SSIM map (B, H, W) of two image batches in [0, 1], averaged over the channels."""
    import torch.nn.functional as F

    r = SSIM_WINDOW // 2
    g = torch.exp(-((torch.arange(SSIM_WINDOW, dtype=a.dtype) - r) ** 2) / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(a.shape[1], 1, SSIM_WINDOW, SSIM_WINDOW)

    def blur(x):
        return F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), window, groups=a.shape[1])

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim.mean(dim=1)


class PixelAE(Method):
    name, skips, ssim, needs_torch = "ae", False, False, True

    def _error(self, x, y):
        """(B, H, W) reconstruction error of y for x."""
        return 1 - _ssim(self._torch, x, y) if self.ssim else ((y - x) ** 2).mean(dim=1)

    def _tensor(self, image: np.ndarray):
        h, w = self.settings.working_shape(*image.shape[:2])
        small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return self._torch.from_numpy(small.transpose(2, 0, 1).astype(np.float32) / 255.0)

    def learn(self, paths: list[Path], held_out: list[np.ndarray], progress: Progress,
              cancel: threading.Event | None) -> None:
        torch = self._torch
        self.settings = with_defect_size(self.settings, paths, PIXEL_SIDE)
        images = [self._tensor(image) for image in load_images(paths, progress, cancel)]
        crop = min(CROP, min(min(x.shape[1:]) for x in images)) // SIDE_MULTIPLE * SIDE_MULTIPLE

        def batches(epoch: int):
            rng = np.random.default_rng([self.settings.seed, epoch])
            order = rng.permutation(len(images))
            for i in range(0, len(order), BATCH):
                crops = []
                for j in order[i:i + BATCH]:
                    x = images[j]
                    top, left = (int(rng.integers(0, side - crop + 1)) for side in x.shape[1:])
                    crops.append(x[:, top:top + crop, left:left + crop])
                yield torch.stack(crops)

        torch.manual_seed(self.settings.seed)
        self.net = _network(torch, self.skips)
        validation = [self._tensor(image)[None] for image in held_out]
        self.training = train_network(self.net, lambda net, x: self._error(x, net(x)).mean(), batches, validation,
                                      self.name, progress, cancel, self.max_epochs)

    def score(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        x = self._tensor(image)[None]
        with self._torch.no_grad():
            error = self._error(x, self.net(x))[0].numpy()
        amap = cv2.GaussianBlur(error, (0, 0), SMOOTHING_SIGMA)
        return float(amap.max()), amap


class PixelAESSIM(PixelAE):
    name, ssim = "ae-ssim", True


class UNetAE(PixelAE):
    name, skips = "unet-ae", True
