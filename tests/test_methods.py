"""The methods compared with PatchCore (issue 23): each learns from small generated good parts
and tells a stained part from good ones, through the same report as PatchCore; the networks
are seeded, stop early and can be cancelled; vit-knn needs its weight file; `compare` prints
one table and writes one ROC figure."""
import json
import threading

import cv2
import numpy as np
import pytest

from inspector.cli import EXIT_ERROR, EXIT_OK, main
from inspector.core.model import Settings
from inspector.errors import BackboneError, Cancelled
from inspector.evaluation.methods import METHODS, make_method
from inspector.evaluation.methods.networks import PATIENCE, train_network
from inspector.evaluation.report import evaluate_method
from inspector.synthetic import make_part, write_parts

SIZE = 64
SETTINGS = Settings(defect_size=8.0)  # a 64 px part is seen at 64 px by every method
EPOCHS = 12


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """An MVTec-layout category of 64 px parts: 20 good to learn from, 4 good and 4 stained to test."""
    root = tmp_path_factory.mktemp("methods") / "parts"
    write_parts(root / "train" / "good", 20, size=SIZE)
    write_parts(root / "test" / "good", 4, seed=500, size=SIZE)
    for path in write_parts(root / "test" / "stain", 4, "stain", seed=700, size=SIZE):
        seed = int(path.stem.split("_")[1])
        diff = np.abs(make_part(seed, SIZE, "stain").astype(int) - make_part(seed, SIZE)).sum(-1) > 30
        (root / "ground_truth" / "stain").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ground_truth" / "stain" / f"{path.stem}_mask.png"), diff.astype(np.uint8) * 255)
    return root


@pytest.mark.parametrize("name", ["knn", "feature-ae", "ae", "ae-ssim", "unet-ae"])
def test_each_method_learns_good_parts_and_tells_a_stain_from_them(parts, name):
    report = evaluate_method(parts, make_method(name, SETTINGS, max_epochs=EPOCHS))
    assert report["method"] == name and report["image_auroc"] >= 0.9, report["scores"]
    assert report["counts"] == {"good_images": 20, "learnt_images": 15, "calibration_images": 5}
    assert np.isfinite(report["threshold"]) and report["latency_ms_median"] > 0
    if METHODS[name].has_map:
        assert report["pixel_auroc"] > 0.8 and report["aupro"] is not None and report["pixel_threshold"] > 0
    else:
        assert report["pixel_auroc"] is None and "gives no anomaly map" in report["pixel_metrics"]
    if METHODS[name].needs_torch:
        assert 1 <= report["training"]["best_epoch"] <= report["training"]["epochs"] <= EPOCHS


def test_a_network_is_seeded_and_its_training_can_be_cancelled(parts):
    first, again = (evaluate_method(parts, make_method("unet-ae", SETTINGS, max_epochs=2)) for _ in range(2))
    assert first["scores"] == again["scores"]
    cancel = threading.Event()

    def progress(stage, done, total):
        if stage.startswith("training"):
            cancel.set()

    with pytest.raises(Cancelled):
        evaluate_method(parts, make_method("ae", SETTINGS, max_epochs=50), progress=progress, cancel=cancel)


def test_training_stops_when_the_validation_loss_stops_improving():
    import torch

    net = torch.nn.Linear(2, 2)
    batches = [torch.ones(4, 2)]
    steady = train_network(net, lambda n, x: (n(x) * 0).sum() + 1.0, lambda epoch: batches, batches,
                           "test", lambda *_: None, None, max_epochs=100)
    assert steady == {"epochs": 1 + PATIENCE, "best_epoch": 1, "validation_loss": 1.0}


def test_vit_knn_needs_a_vit_weight_file_and_runs_with_one(parts, tmp_path):
    import torch
    from torchvision.models.vision_transformer import VisionTransformer

    with pytest.raises(BackboneError, match="--vit-weights FILE. None ships"):
        make_method("vit-knn", SETTINGS)
    with pytest.raises(BackboneError, match="ViT weight file not found"):
        make_method("vit-knn", SETTINGS, vit_weights=tmp_path / "vit_b_16.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), wrong)
    with pytest.raises(BackboneError, match="not a usable torchvision ViT weight file"):
        make_method("vit-knn", SETTINGS, vit_weights=wrong)
    # A real (tiny, untrained) torchvision ViT weight file: the method reads its shape from it.
    tiny = tmp_path / "tiny_vit.pth"
    torch.manual_seed(0)
    torch.save(VisionTransformer(32, 16, 2, 1, 32, 64).state_dict(), tiny)
    report = evaluate_method(parts, make_method("vit-knn", SETTINGS, vit_weights=tiny))
    assert report["method"] == "vit-knn" and 0.0 <= report["image_auroc"] <= 1.0
    assert report["pixel_auroc"] is None and report["settings"]["vit_weights"] == str(tiny)
    assert main(["evaluate", str(parts), "--method", "vit-knn", "--models-dir", str(tmp_path / "m")]) == EXIT_ERROR


def test_compare_prints_one_table_and_writes_one_roc_figure(parts, tmp_path, capsys):
    plot, out_json = tmp_path / "roc.png", tmp_path / "compare.json"
    assert main(["compare", str(parts), "--methods", "patchcore", "knn", "ae", "--max-epochs", "2",
                 "--defect-size", "8", "--plot", str(plot), "--json", str(out_json),
                 "--models-dir", str(tmp_path / "m")]) == EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("category"))
    for column in ("image AUROC", "pixel AUROC", "AUPRO", "F1 (calibrated)", "training s", "latency ms",
                   "peak memory MB"):
        assert column in lines[header]
    rows = [line.split() for line in lines[header + 2:header + 5]]
    assert [r[:2] for r in rows] == [["parts", "patchcore"], ["parts", "knn"], ["parts", "ae"]]
    assert rows[0][2] == "1.0000" and rows[1][3] == "-"  # knn has no anomaly map
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 100
    reports = json.loads(out_json.read_text())
    assert [r["method"] for r in reports] == ["patchcore", "knn", "ae"]
    assert main(["compare", str(parts), "--methods", "vit-knn", "--models-dir", str(tmp_path / "m")]) == EXIT_ERROR
