"""Pictures of an evaluation: ROC curves, score histograms and a gallery of heatmaps.

The heatmap and boxes are drawn as everywhere else (inspector.drawing); matplotlib is imported inside the two
plotting functions, and draws on its own Figure with the Agg canvas, so no global pyplot state is touched."""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from ..data.images import save_image
from ..drawing import RED, YELLOW, draw_boxes, overlay_heatmap

MAX_CURVE_POINTS = 5000  # a pixel ROC has millions of points; a plot needs a few thousand


def _gallery_panel(item, vmin, vmax):
    """image | heatmap overlay | predicted mask, side by side, boxes on each, caption below."""
    image = np.asarray(item["image"], np.uint8)
    mask_panel = np.zeros_like(image)
    mask_panel[np.asarray(item["pred_mask"], bool)] = 255
    if item.get("gt_mask") is not None:  # ground-truth outline, to compare with the mask
        contours, _ = cv2.findContours(np.asarray(item["gt_mask"], np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(mask_panel, contours, -1, YELLOW, 1)
    thickness = max(1, round(image.shape[1] / 256))
    panels = []
    for panel in (image, overlay_heatmap(image, item["anomaly_map"], vmin, vmax), mask_panel):
        panel = draw_boxes(panel, item.get("gt_boxes") or [], YELLOW, thickness)
        panels.append(draw_boxes(panel, item.get("pred_boxes") or [], RED, thickness))
    strip = np.hstack(panels)
    caption = np.full((28 * thickness, strip.shape[1], 3), 32, np.uint8)
    text = f"{item['name']}   score {float(item['score']):.4g}   {item['verdict']}"
    cv2.putText(caption, text, (6, 20 * thickness), cv2.FONT_HERSHEY_SIMPLEX,
                0.5 * thickness, (255, 255, 255), thickness, cv2.LINE_AA)
    return np.vstack([strip, caption])


def save_gallery(folder, items, vmin: float, vmax: float, max_items=None) -> list[Path]:
    """Write one PNG per item (`_gallery_panel`) into folder, at most max_items, named `<index>_<name>.png`; all
    heatmaps share vmin, vmax. Returns the paths. Boxes are (x, y, w, h): ground truth in yellow, predicted in red."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, item in enumerate(islice(items, max_items)):
        safe_name = re.sub(r"[^\w.-]+", "_", str(item["name"]))
        path = folder / f"{index:04d}_{safe_name}.png"
        save_image(path, _gallery_panel(item, vmin, vmax))
        paths.append(path)
    return paths


def _figure(width=6.0, height=4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")


def plot_roc(path, curves: dict) -> None:
    """One ROC plot with a line per curve, e.g. {"image": (fpr, tpr, auc), "pixel": ...}, each labelled with its AUC."""
    plot_roc_panels(path, {"ROC": curves})


def plot_roc_panels(path, panels: dict) -> None:
    """ROC plots side by side in one figure, one per title: {title: {name: (fpr, tpr, auc)}}."""
    figure = _figure(6.0 * len(panels))
    for axes, (title, curves) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for name, (fpr, tpr, auc) in curves.items():
            step = max(1, len(fpr) // MAX_CURVE_POINTS)
            axes.plot(np.append(fpr[::step], fpr[-1]), np.append(tpr[::step], tpr[-1]),
                      label=f"{name} AUROC = {auc:.3f}")
        axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
        axes.legend(loc="lower right")
    _save_figure(figure, path)


def plot_score_histogram(path, good_scores, defect_scores, threshold: float, title: str) -> None:
    """Histograms of good (green) and defect (red) scores, either may be empty, with a dashed threshold line."""
    good_scores = np.asarray(good_scores, float).ravel()
    defect_scores = np.asarray(defect_scores, float).ravel()
    bins = np.histogram_bin_edges(np.concatenate([good_scores, defect_scores, [threshold]]), 40)
    figure = _figure()
    axes = figure.add_subplot()
    axes.hist(good_scores, bins, color="green", alpha=0.5, label=f"good ({good_scores.size})")
    axes.hist(defect_scores, bins, color="red", alpha=0.5, label=f"defect ({defect_scores.size})")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold = {threshold:.4g}")
    axes.set(xlabel="anomaly score", ylabel="images", title=title)
    axes.legend()
    _save_figure(figure, path)
