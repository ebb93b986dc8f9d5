"""Training a network for a method: torch (the `export` extra) or a clear error, on one thread, seeded (the network is
made and its batches drawn from the seed), with progress per epoch, a cancel checked every batch, and early
stopping when the validation loss (on held-out good images) stops improving; the best epoch's weights are kept."""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable

from ...core.features import require_export_extra
from ...core.memory_bank import Progress
from .base import check_cancel

MAX_EPOCHS = 40
PATIENCE = 4  # epochs without a better validation loss before training stops
MIN_IMPROVEMENT = 1e-3  # relative: a smaller drop of the validation loss does not count
LEARNING_RATE = 1e-3
# One thread: these small networks gain little from a second one, and on two cores shared with
# the backbone's ONNX Runtime threads or other work, torch's threads wait for each other (measured
# on the shared 2-core machine: an epoch of `ae` 5x, a product 5-10x slower on two threads).
TORCH_THREADS = 1


def torch_for(method: str):
    """torch, on TORCH_THREADS threads; a BackboneError naming the `export` extra without it."""
    require_export_extra(f"The '{method}' method (it runs a torch network)")
    import torch

    torch.set_num_threads(TORCH_THREADS)
    torch.set_flush_denormal(True)  # tiny values left by training would slow every product tenfold
    return torch


def train_network(net, loss: Callable, batches: Callable[[int], Iterable], validation: list, method: str,
                  progress: Progress, cancel: threading.Event | None, max_epochs: int | None = None) -> dict:
    """Adam on `loss(net, batch)` over `batches(epoch)`; after each epoch the mean loss over the
    `validation` batches decides: a new best keeps the weights, PATIENCE epochs without one stop.
    Returns how it went (epochs, best epoch, best validation loss)."""
    import torch

    max_epochs = max_epochs or MAX_EPOCHS
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    best, best_state, best_epoch, epoch = float("inf"), None, 0, 0
    for epoch in range(1, max_epochs + 1):
        net.train()
        for batch in batches(epoch):
            check_cancel(cancel)
            optimiser.zero_grad()
            value = loss(net, batch)
            value.backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            validation_loss = sum(float(loss(net, batch)) for batch in validation) / max(len(validation), 1)
        if validation_loss < best * (1 - MIN_IMPROVEMENT):
            best, best_state, best_epoch = validation_loss, copy.deepcopy(net.state_dict()), epoch
        progress(f"training {method}", epoch, max_epochs)
        if epoch - best_epoch >= PATIENCE:
            progress(f"training {method}", max_epochs, max_epochs)  # stopped early: the stage is done
            break
    net.load_state_dict(best_state)
    net.eval()
    return {"epochs": epoch, "best_epoch": best_epoch, "validation_loss": best}
