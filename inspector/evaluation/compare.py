"""`inspector compare`: every method on each category, one table of the same report's figures
and one figure of the image ROC curves (a panel per category, a curve per method)."""
from __future__ import annotations

import threading
from pathlib import Path

from ..core.memory_bank import Progress, no_progress
from ..core.model import Settings
from ..data.mvtec import MVTecCategory
from . import metrics
from .methods import METHODS, make_method
from .methods.vit_knn import VitKnn
from .report import evaluate_method

COLUMNS = (("image AUROC", "image_auroc", "{:.4f}"), ("pixel AUROC", "pixel_auroc", "{:.4f}"),
           ("AUPRO", "aupro", "{:.4f}"), ("F1 (calibrated)", "f1_calibrated", "{:.4f}"),
           ("training s", "train_seconds", "{:.1f}"), ("latency ms", "latency_ms_median", "{:.1f}"),
           ("peak memory MB", "peak_memory_added_mb", "+{:.0f}"))


def default_methods(vit_weights: str | Path | None) -> list[str]:
    """Every method; vit-knn only with a ViT weight file (none ships)."""
    return [m for m in METHODS if m != VitKnn.name or vit_weights is not None]


def compare(categories: list[str | Path], methods: list[str], settings: Settings, device: str = "cpu",
            vit_weights: str | Path | None = None, max_epochs: int | None = None, plot: str | Path | None = None,
            progress: Progress = no_progress, cancel: threading.Event | None = None,
            done=lambda report: None) -> list[dict]:
    """The report of each method on each category (methods.make_method, report.evaluate_method),
    in that order; `done` gets each as it is made. Every category and method is checked first,
    so that a wrong name or a missing weight file fails before hours of training."""
    for category in categories:
        MVTecCategory(category)
    for name in methods:
        make_method(name, settings, device, vit_weights, max_epochs)
    reports = []
    for category in categories:
        for name in methods:
            progress(f"{Path(category).name}: {name}", 0, 1)
            reports.append(evaluate_method(category, make_method(name, settings, device, vit_weights, max_epochs),
                                           None, progress, cancel))
            done(reports[-1])
    if plot is not None:
        from .plots import plot_roc_panels

        panels: dict = {}
        for r in reports:
            panels.setdefault(r["category"], {})[r["method"]] = metrics.roc(r["labels"], r["scores"])
        plot_roc_panels(plot, panels)
    return reports


def table(reports: list[dict]) -> str:
    """One row per category and method: the figures of COLUMNS ('-' where unavailable)."""
    head = ["category", "method"] + [c[0] for c in COLUMNS]
    rows = [[r["category"], r["method"]] + ["-" if r[key] is None else form.format(r[key]) for _, key, form in COLUMNS]
            for r in reports]
    widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [head] + rows]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])
