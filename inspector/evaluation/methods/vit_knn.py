"""kNN on a Vision Transformer's class token: each image, squashed to the ViT's input size, becomes its class token,
scored as `knn` scores. The ViT weights are a torchvision VisionTransformer state dict (e.g. vit_b_16-c867db91.pth,
.pth or .safetensors) given by path: none ship, and Inspector never downloads weights."""
from __future__ import annotations

import math
import threading
from pathlib import Path

import cv2
import numpy as np

from ...core.backbones import IMAGENET_MEAN, IMAGENET_STD
from ...core.memory_bank import Progress
from ...errors import BackboneError
from .base import check_cancel, load_images
from .knn import Knn

HEADS = {768: 12, 1024: 16, 1280: 16}  # torchvision's ViT-B, -L and -H; otherwise 64 channels a head
BATCH = 8
NEEDED = ("a ViT weight file: a torchvision VisionTransformer state dict (e.g. vit_b_16-c867db91.pth), "
          "given with --vit-weights FILE. None ships with Inspector, which never downloads weights")


def load_vit(torch, weights: str | Path | None):
    """A torchvision VisionTransformer from its weight file, its classification head removed
    (its output is the class token); the architecture is read from the tensors' shapes."""
    if weights is None:
        raise BackboneError(f"The 'vit-knn' method needs {NEEDED}.")
    path = Path(weights)
    if not path.is_file():
        raise BackboneError(f"ViT weight file not found: {path}. The 'vit-knn' method needs {NEEDED}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        from torchvision.models.vision_transformer import VisionTransformer

        hidden, _, patch, _ = state["conv_proj.weight"].shape
        tokens = state["encoder.pos_embedding"].shape[1]
        layers = sum(1 for k in state if k.startswith("encoder.layers.") and k.endswith(".ln_1.weight"))
        mlp = state["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0]
        net = VisionTransformer(patch * math.isqrt(tokens - 1), patch, layers, HEADS.get(hidden, max(1, hidden // 64)),
                                hidden, mlp)
        net.heads = torch.nn.Identity()
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("heads.")})
    except (KeyError, ValueError, RuntimeError, OSError, AttributeError) as exc:
        raise BackboneError(f"{path} is not a usable torchvision ViT weight file ({type(exc).__name__}: {exc}). "
                            f"The 'vit-knn' method needs {NEEDED}.") from exc
    return net.eval()


class VitKnn(Knn):
    name, needs_torch = "vit-knn", True  # no training, but torch runs the ViT

    def __init__(self, settings, device: str = "cpu", vit_weights: str | Path | None = None):
        super().__init__(settings, device)
        self._net = load_vit(self._torch, vit_weights)  # before any training: a missing file fails at once
        self.vit_weights = str(vit_weights)

    def learn(self, paths: list[Path], held_out: list[np.ndarray], progress: Progress,
              cancel: threading.Event | None) -> None:
        vectors = []
        for i in range(0, len(paths), BATCH):
            check_cancel(cancel)
            vectors.extend(self._tokens(load_images(paths[i:i + BATCH], lambda *_: None, cancel)))
            progress("class tokens of good images", min(i + BATCH, len(paths)), len(paths))
        self.good = np.stack(vectors)

    def _tokens(self, images: list[np.ndarray]) -> np.ndarray:
        side = self._net.image_size
        mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
        batch = np.stack([(cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) / np.float32(255) - mean) / std
                          for im in images]).transpose(0, 3, 1, 2)
        with self._torch.no_grad():
            return self._net(self._torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()

    def embed(self, image: np.ndarray) -> np.ndarray:
        return self._tokens([image])[0]

    def metadata(self) -> dict:
        return super().metadata() | {"vit_weights": self.vit_weights}
