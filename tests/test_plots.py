import subprocess
import sys

import cv2
import numpy as np

from inspector.drawing import draw_boxes, overlay_heatmap
from inspector.evaluation.plots import plot_roc, plot_score_histogram, save_gallery

H, W = 64, 80
RED_BGR = (0, 0, 255)
YELLOW_BGR = (0, 255, 255)


def read_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_overlay_shape_dtype_and_hot_is_red():
    image = np.full((H, W, 3), 128, np.uint8)
    amap = np.zeros((H, W), np.float32)
    amap[:, W // 2:] = 5.0
    out = overlay_heatmap(image, amap, vmin=0.0, vmax=5.0)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    cold, hot = out[0, 0].astype(int), out[0, -1].astype(int)
    assert hot[0] - hot[2] > 40  # RGB: red above blue where hot
    assert cold[2] - cold[0] > 40  # blue above red where cold


def test_overlay_uses_the_given_scale():
    image = np.full((H, W, 3), 128, np.uint8)
    amap = np.full((H, W), 5.0, np.float32)
    red_on_small_scale = overlay_heatmap(image, amap, 0.0, 5.0)[0, 0, 0]
    red_on_large_scale = overlay_heatmap(image, amap, 0.0, 50.0)[0, 0, 0]
    assert red_on_small_scale > red_on_large_scale
    clipped = overlay_heatmap(image, amap * 10, 0.0, 5.0)
    assert np.array_equal(clipped, overlay_heatmap(image, amap, 0.0, 5.0))


def test_draw_boxes_edges_only_and_copy():
    image = np.zeros((H, W, 3), np.uint8)
    out = draw_boxes(image, [(10, 20, 30, 15)], (255, 0, 0), 1)
    assert image.max() == 0  # the input is left alone
    assert tuple(out[20, 25]) == (255, 0, 0)  # top edge
    assert tuple(out[34, 39]) == (255, 0, 0)  # bottom-right corner, x + w - 1, y + h - 1
    assert out[27, 25].max() == 0  # inside
    assert out[35, 25].max() == 0  # just below


def test_importing_plots_does_not_load_matplotlib():
    code = "import sys, inspector.evaluation.plots; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def gallery_item(name):
    image = np.full((H, W, 3), 100, np.uint8)
    amap = np.zeros((H, W), np.float32)
    amap[10:30, 10:30] = 1.0
    pred = amap > 0.5
    return {"name": name, "image": image, "anomaly_map": amap, "pred_mask": pred,
            "gt_mask": None, "gt_boxes": [(40, 35, 20, 15)], "pred_boxes": [(10, 10, 20, 20)],
            "score": 1.234, "verdict": "NG"}


def test_gallery_writes_panels_with_red_and_yellow_boxes(tmp_path):
    items = [gallery_item("scratch/000"), gallery_item("défaut 1"), gallery_item("c")]
    paths = save_gallery(tmp_path / "gallery", items, vmin=0.0, vmax=1.0, max_items=2)
    assert len(paths) == 2 and all(p.exists() for p in paths)
    panel = read_png(paths[1])
    assert panel.shape[1] == 3 * W and panel.shape[0] > H
    for k in range(3):  # image | overlay | mask, each with both boxes
        x = k * W
        assert tuple(panel[10, x + 20]) == RED_BGR  # top edge of the predicted box
        assert tuple(panel[20, x + 10]) == RED_BGR  # left edge
        assert tuple(panel[35, x + 50]) == YELLOW_BGR  # top edge of the ground-truth box
        assert tuple(panel[45, x + 59]) == YELLOW_BGR  # right edge
    assert tuple(panel[50, 5]) == (100, 100, 100)  # plain image elsewhere
    assert tuple(panel[20, 2 * W + 20]) == (255, 255, 255)  # predicted mask is white


def test_gallery_gt_mask_outline_on_mask_panel(tmp_path):
    item = gallery_item("a")
    item["gt_mask"] = np.zeros((H, W), bool)
    item["gt_mask"][40:50, 5:15] = True
    item["gt_boxes"] = []
    panel = read_png(save_gallery(tmp_path, [item], 0.0, 1.0)[0])
    assert tuple(panel[40, 2 * W + 10]) == YELLOW_BGR
    assert tuple(panel[45, 2 * W + 10]) == (0, 0, 0)  # inside the outline: no prediction


def test_plot_roc_writes_png(tmp_path):
    fpr = np.linspace(0, 1, 20000)
    path = tmp_path / "plots" / "roc.png"
    plot_roc(path, {"image": (fpr, np.sqrt(fpr), 0.667), "pixel": (fpr, fpr ** 0.2, 0.833)})
    image = read_png(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert path.stat().st_size > 5000
    assert image.std() > 10  # not a blank canvas


def test_plot_score_histogram_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "hist.png"
    plot_score_histogram(path, rng.normal(1, 0.2, 100), rng.normal(2, 0.3, 30), 1.5, "bottle")
    image = read_png(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    bgr = image.reshape(-1, 3).astype(int)
    assert np.any((bgr[:, 1] > bgr[:, 2] + 50) & (bgr[:, 1] > bgr[:, 0] + 50))  # green bars
    assert np.any((bgr[:, 2] > bgr[:, 1] + 50) & (bgr[:, 2] > bgr[:, 0] + 50))  # red bars


def test_plot_score_histogram_good_only(tmp_path):
    path = tmp_path / "good_only.png"
    plot_score_histogram(path, [0.1, 0.2, 0.3], [], 0.4, "calibration")
    assert read_png(path).shape[0] > 200
