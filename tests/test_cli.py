"""The command line, in-process, on generated parts: exit codes, outputs and files."""
import csv
import json
import shutil

import cv2
import numpy as np
import pytest

from inspector.cli import EXIT_ERROR, EXIT_NG, EXIT_OK, main
from inspector.synthetic import make_part, write_parts


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_parts(root / "good", 12)
    common = ["--models-dir", str(root / "models"), "--db", str(root / "log.db")]
    assert main(["train", str(root / "good"), "--product", "Gear 7", "--sampling-ratio", "0.02"] + common) == EXIT_OK
    return root, common


def test_train_saves_a_model_listed_by_models(station, capsys):
    root, common = station
    assert (root / "models" / "Gear 7" / "model.json").is_file()
    assert main(["models"] + common) == EXIT_OK
    assert "Gear 7: threshold" in capsys.readouterr().out


def test_inspect_exit_codes(station, tmp_path, capsys):
    root, common = station
    good = write_parts(tmp_path / "ok", 2, seed=40)
    bad = write_parts(tmp_path / "ng", 1, "stain", seed=41)
    args = ["--product", "Gear 7"] + common
    assert main(["inspect", *map(str, good)] + args) == EXIT_OK
    assert main(["inspect", str(tmp_path / "ng")] + args) == EXIT_NG
    out = capsys.readouterr().out
    assert out.count("OK ") == 2 and "NG " in out and str(bad[0]) in out
    (tmp_path / "broken.png").write_bytes(b"junk")
    assert main(["inspect", str(tmp_path / "broken.png")] + args) == EXIT_ERROR
    assert main(["inspect", str(good[0]), "--product", "Nope"] + common) == EXIT_ERROR
    assert "train the product first" in capsys.readouterr().err


def test_train_refuses_a_wrong_folder(station, tmp_path, capsys):
    _, common = station
    assert main(["train", str(tmp_path / "missing"), "--product", "X"] + common) == EXIT_ERROR
    assert "missing" in capsys.readouterr().err


def test_history_and_csv(station, tmp_path, capsys):
    root, common = station
    main(["inspect", *map(str, write_parts(tmp_path, 1, "scratch", seed=60)), "--product", "Gear 7"] + common)
    capsys.readouterr()
    assert main(["history", "--verdict", "NG"] + common) == EXIT_OK
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert lines and all(" NG " in line for line in lines)
    assert main(["history", "--csv", str(tmp_path / "h.csv")] + common) == EXIT_OK
    rows = list(csv.DictReader(open(tmp_path / "h.csv", encoding="utf-8-sig")))
    assert rows and {"product", "verdict", "score", "threshold", "regions"} <= set(rows[0])


def test_camera_on_a_video_file(station, tmp_path, capsys):
    _, common = station
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20, (256, 256))
    for i in range(4):
        writer.write(cv2.cvtColor(make_part(300 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    code = main(["camera", str(video), "--product", "Gear 7", "--count", "2"] + common)
    out = capsys.readouterr().out  # MJPG artefacts may push frames over a threshold set on PNGs
    assert code in (EXIT_OK, EXIT_NG) and out.count("line.avi#") == 2


def write_mvtec(root):
    write_parts(root / "train" / "good", 12)
    write_parts(root / "test" / "good", 3, seed=500)
    for defect, seed in (("scratch", 600), ("stain", 700)):
        for path in write_parts(root / "test" / defect, 3, defect, seed=seed):
            image = make_part(int(path.stem.split("_")[1]), defect=defect).astype(int)
            diff = np.abs(image - make_part(int(path.stem.split("_")[1]))).sum(-1) > 30
            (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "ground_truth" / defect / f"{path.stem}_mask.png"), diff.astype(np.uint8) * 255)


def test_evaluate_writes_metrics_and_plots(tmp_path, capsys):
    write_mvtec(tmp_path / "parts")
    code = main(["evaluate", str(tmp_path / "parts"), "--json", str(tmp_path / "r.json"),
                 "--plots", str(tmp_path / "plots"), "--models-dir", str(tmp_path / "m")])
    assert code == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_calibrated", "f1_best", "dice", "train_seconds",
                "latency_ms_median", "throughput_ips"):
        assert isinstance(report[key], float), key
    assert report["image_auroc"] == 1.0 and report["pixel_auroc"] > 0.9
    assert set(report["per_defect_auroc"]) == {"scratch", "stain"}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"roc.png", "scores.png", "gallery"}
    assert len(list((tmp_path / "plots" / "gallery").glob("*.png"))) == 9
    assert "image AUROC 1.0000" in capsys.readouterr().out


def test_self_test_passes(capsys):
    assert main(["self-test"]) == EXIT_OK
    assert "self-test passed" in capsys.readouterr().out


def test_evaluate_a_category_without_masks_gives_its_image_report(tmp_path, capsys):
    write_mvtec(tmp_path / "parts")
    shutil.rmtree(tmp_path / "parts" / "ground_truth")
    code = main(["evaluate", str(tmp_path / "parts"), "--json", str(tmp_path / "r.json"),
                 "--plots", str(tmp_path / "plots"), "--models-dir", str(tmp_path / "m")])
    assert code == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["image_auroc"] == 1.0 and report["f1_calibrated"] > 0.8
    assert report["pixel_auroc"] is None and report["aupro"] is None and report["dice"] is None
    assert report["pixel_metrics"].startswith("unavailable") and len(report["missing_masks"]) == 6
    out = capsys.readouterr().out
    assert "pixel AUROC unavailable" in out and "6 defect image(s) without a ground-truth mask" in out


def test_evaluate_reports_a_missing_mask_instead_of_scoring_an_empty_one(tmp_path):
    write_mvtec(tmp_path / "parts")
    gone = sorted((tmp_path / "parts" / "ground_truth" / "stain").iterdir())[0]
    gone.unlink()
    assert main(["evaluate", str(tmp_path / "parts"), "--json", str(tmp_path / "r.json"),
                 "--models-dir", str(tmp_path / "m")]) == EXIT_OK
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["missing_masks"] == [f"test/stain/{gone.name.replace('_mask', '')}"]
    assert report["pixel_metrics"] == "over 8 of 9 images" and report["pixel_auroc"] > 0.9
