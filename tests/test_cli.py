"""The command line, in-process, on generated parts: exit codes, outputs and files."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import copy_models

from inspector.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NG, EXIT_OK, main
from inspector.common import login_name
from inspector.core.model_store import load_model, save_model
from inspector.store.results import STATION, ResultStore
from inspector.synthetic import make_part, write_parts
from inspector.users import Accounts, accounts_path


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_parts(root / "good", 12)
    common = ["--models-dir", str(root / "models"), "--db", str(root / "log.db")]
    assert main(["train", str(root / "good"), "--product", "Gear 7", "--sampling-ratio", "0.02"] + common) == EXIT_OK
    return root, common


def test_train_saves_a_model_listed_by_models(station, capsys):
    root, common = station
    assert (root / "models" / "Gear 7" / "v0001" / "model.json").is_file()
    assert main(["models"] + common) == EXIT_OK
    assert "Gear 7 (number 1): version 1, threshold" in capsys.readouterr().out


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
    """Two frames, however slow the inspection: the first is taken as soon as the video plays
    (it lasts 2 s), and the video's last frame is inspected when it ends."""
    _, common = station
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 2, (256, 256))
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


# ---- issue 8: every operator action is a command; changes are on record ---------------------

@pytest.fixture
def own(station, tmp_path):
    """A copy of the trained station to change: (root, common arguments)."""
    root, _ = station
    copy_models(root / "models", tmp_path / "models")
    return tmp_path, ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]


def test_with_an_engineer_pin_only_the_engineer_changes_models(own, tmp_path, monkeypatch, capsys):
    """As in the window: a station whose engineer PIN is set (beside its result log) takes a
    change of a model or a product from the command line only with that PIN; reading and
    inspecting need none."""
    root, common = own
    Accounts(accounts_path(root)).set_engineer("Eve", "2468")
    monkeypatch.delenv("INSPECTOR_PIN", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)  # run by a script: nobody to ask
    good = str(write_parts(tmp_path / "good", 5, seed=20)[0].parent)
    changes = [["calibrate", "--product", "Gear 7", "--tolerance", "1"], ["rollback", "--product", "Gear 7", "--version", "1"],
               ["rebuild", good, "--product", "Gear 7", "--sampling-ratio", "0.05"], ["train", good, "--product", "Gear 8"],
               ["teach", good, "--product", "Gear 7"], ["roi", "--clear", "--product", "Gear 7"],
               ["products", "create", "Gear 9"],
               ["products", "delete", "Gear 7", "--yes"]]
    for change in changes:
        assert main(change + common) == EXIT_ERROR, change
        assert "Only an engineer may" in capsys.readouterr().err
    monkeypatch.setenv("INSPECTOR_PIN", "1111")
    assert main(changes[0] + common) == EXIT_ERROR and "Wrong PIN" in capsys.readouterr().err
    assert load_model(root / "models", "Gear 7").version == 1 and not (root / "models" / "Gear 9").exists()
    with ResultStore(root / "log.db") as store:
        assert store.events("Gear 7") == []
    assert main(["calibrate", "--product", "Gear 7"] + common) == EXIT_OK  # looking needs no PIN
    assert main(["inspect", good, "--product", "Gear 7"] + common) in (EXIT_OK, EXIT_NG)
    monkeypatch.setenv("INSPECTOR_PIN", "2468")
    assert main(changes[0] + common) == EXIT_OK
    with ResultStore(root / "log.db") as store:
        [event] = store.events("Gear 7")
    assert (event.kind, event.user) == ("tolerance", "Eve (engineer)")


def test_engineer_sets_and_changes_the_pin_as_the_window_does(tmp_path, monkeypatch, capsys):
    """`inspector engineer` shows who the engineer is; with a name it sets the PIN (from a file
    or asked twice on a terminal), on record; a change needs the current PIN."""
    common = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    monkeypatch.delenv("INSPECTOR_PIN", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["engineer"] + common) == EXIT_OK and "No engineer PIN is set" in capsys.readouterr().out
    os.mkfifo(tmp_path / "pin.fifo")  # a named pipe given as the PIN file: refused, never waited on
    assert main(["engineer", "Eve", "--pin-file", str(tmp_path / "pin.fifo")] + common) == EXIT_ERROR
    assert "not a regular file" in capsys.readouterr().err
    (tmp_path / "pin.txt").write_text("2468\n", encoding="utf-8")
    assert main(["engineer", "Eve", "--pin-file", str(tmp_path / "pin.txt")] + common) == EXIT_OK
    accounts = Accounts(accounts_path(tmp_path))
    assert accounts.unlock("2468").name == "Eve"
    assert main(["engineer"] + common) == EXIT_OK and "Engineer: Eve" in capsys.readouterr().out

    (tmp_path / "pin.txt").write_text("1357", encoding="utf-8")
    change = ["engineer", "Ann", "--pin-file", str(tmp_path / "pin.txt")] + common
    assert main(change) == EXIT_ERROR and "Only an engineer may change the engineer PIN" in capsys.readouterr().err
    monkeypatch.setenv("INSPECTOR_PIN", "1111")
    assert main(change) == EXIT_ERROR and "Wrong PIN" in capsys.readouterr().err
    assert accounts.engineer_name() == "Eve"
    monkeypatch.setenv("INSPECTOR_PIN", "2468")
    assert main(change) == EXIT_OK
    assert Accounts(accounts_path(tmp_path)).unlock("1357").name == "Ann"

    monkeypatch.setenv("INSPECTOR_PIN", "1357")  # on a terminal: the new PIN is asked twice
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    typed = iter(["97531", "97530"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert main(["engineer", "Bo"] + common) == EXIT_ERROR and "The two PINs differ" in capsys.readouterr().err
    typed = iter(["97531", "97531"])
    assert main(["engineer", "Bo"] + common) == EXIT_OK
    assert Accounts(accounts_path(tmp_path)).unlock("97531").name == "Bo"
    with ResultStore(tmp_path / "log.db") as store:
        events = [e for e in store.events(STATION) if e.kind == "engineer"]
    assert [(e.old, e.new, e.detail) for e in reversed(events)] == [
        (None, "Eve", "engineer PIN set"), ("Eve", "Ann", "engineer PIN changed"), ("Ann", "Bo", "engineer PIN changed")]


def test_calibrate_sets_the_tolerance_as_a_new_version_on_record(own, capsys):
    root, common = own
    before = load_model(root / "models", "Gear 7")
    assert main(["calibrate", "--product", "Gear 7", "--tolerance", "1.5"] + common) == EXIT_OK
    out = capsys.readouterr().out
    after = load_model(root / "models", "Gear 7")
    assert after.version == before.version + 1 and after.settings.tolerance == 1.5
    assert f"threshold {before.threshold:.4g} -> {after.threshold:.4g}" in out and "Expected false rejects:" in out
    with ResultStore(root / "log.db") as store:
        [event] = store.events("Gear 7")
    assert (event.kind, event.user) == ("tolerance", login_name())
    assert f"version {before.version}" in event.old and "tolerance 3" in event.old
    assert f"version {after.version}" in event.new and "tolerance 1.5" in event.new
    assert main(["calibrate", "--product", "Gear 7", "--tolerance", "nan"] + common) == EXIT_ERROR
    assert load_model(root / "models", "Gear 7").version == after.version
    capsys.readouterr()
    assert main(["calibrate", "--product", "Gear 7", "--sigma", "2"] + common) == EXIT_OK  # its older name
    assert "'--sigma' is now called '--tolerance'" in capsys.readouterr().err
    assert load_model(root / "models", "Gear 7").settings.tolerance == 2.0


def test_calibrate_scores_known_defects_in_subfolders(station, tmp_path, capsys):
    root, common = station
    write_parts(tmp_path / "defects" / "scratch", 2, "scratch", seed=70)
    write_parts(tmp_path / "defects" / "stain", 2, "stain", seed=80)
    (tmp_path / "defects" / "stain" / "broken.png").write_bytes(b"junk")
    write_parts(tmp_path / "defects" / "good", 3, seed=85)  # a test folder's good parts: good, not defects
    assert main(["calibrate", "--product", "Gear 7", "--defects", str(tmp_path / "defects")] + common) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out.count("scratch_07") == 2 and captured.out.count("stain_08") == 2
    assert "escapes 0 of 4 known defects" in captured.out and "broken.png" in captured.err
    assert "Scored 4 known defect(s) of 2 kind(s) and 3 good part(s)" in captured.out
    assert "good parts of the defects folder" in captured.out
    assert "Proposed: threshold" in captured.out and "resting on 4 known defect(s) of 2 kind(s)" in captured.out
    assert "escapes 0 of 4" in captured.out and "WARNING It rests on only 4 known defect(s)" in captured.err
    with ResultStore(root / "log.db") as store:  # scoring known defects logs nothing
        assert not [r for r in store.query() if "defects" in (r.image_path or "")]


def test_products_rename_keeps_the_history_and_delete_asks_first(own, tmp_path, capsys):
    root, common = own
    files = write_parts(tmp_path / "line", 2, seed=90)
    assert main(["inspect", *map(str, files), "--product", "Gear 7"] + common) == EXIT_OK
    assert main(["products", "rename", "Gear 7", "Gear 8"] + common) == EXIT_OK
    assert main(["inspect", *map(str, files), "--product", "Gear 8"] + common) == EXIT_OK  # logged once, still
    with ResultStore(root / "log.db") as store:
        assert store.count(product="Gear 8") == 2 and store.count(product="Gear 7") == 0
        assert [e.kind for e in store.events("Gear 8")] == ["rename"]
    assert main(["products", "delete", "Gear 8"] + common) == EXIT_ERROR
    assert "--yes" in capsys.readouterr().err and (root / "models" / "Gear 8").is_dir()
    assert main(["products", "delete", "Gear 8", "--yes"] + common) == EXIT_OK
    assert not (root / "models" / "Gear 8").exists()
    with ResultStore(root / "log.db") as store:
        assert store.count(product="Gear 8") == 2  # the history stays
        assert [e.kind for e in store.events("Gear 8")] == ["delete", "rename"]
    assert main(["products", "create", "Gear 9"] + common) == EXIT_OK and (root / "models" / "Gear 9").is_dir()
    assert main(["history", "--events"] + common) == EXIT_OK
    assert "Gear 9  create" in capsys.readouterr().out


def test_inspect_again_inspects_logged_files_and_logs_nothing(station, tmp_path, capsys):
    root, common = station
    files = write_parts(tmp_path / "again", 1, "stain", seed=95)
    assert main(["inspect", str(files[0]), "--product", "Gear 7"] + common) == EXIT_NG
    with ResultStore(root / "log.db") as store:
        logged = store.count()
    capsys.readouterr()
    assert main(["inspect", str(files[0]), "--product", "Gear 7", "--again"] + common) == EXIT_NG
    assert "NG" in capsys.readouterr().out
    with ResultStore(root / "log.db") as store:
        assert store.count() == logged


def test_rebuild_the_memory_bank_from_the_good_images(station, own, capsys):
    root, common = own
    before = load_model(root / "models", "Gear 7")
    assert main(["rebuild", str(station[0] / "good"), "--product", "Gear 7", "--sampling-ratio", "0.05"]
                + common) == EXIT_OK
    after = load_model(root / "models", "Gear 7")
    assert after.version == before.version + 1 and after.settings.sampling_ratio == 0.05
    assert len(after.memory_bank) > len(before.memory_bank)
    with ResultStore(root / "log.db") as store:
        assert [e.kind for e in store.events("Gear 7")] == ["bank"]

    # without a folder: the one the model was trained from, which it records
    assert before.good_folder == str(station[0] / "good")
    assert main(["rebuild", "--product", "Gear 7", "--sampling-ratio", "0.02"] + common) == EXIT_OK
    again = load_model(root / "models", "Gear 7")
    assert again.version == after.version + 1 and again.settings.sampling_ratio == 0.02
    assert len(again.memory_bank) == len(before.memory_bank) and f"from {station[0] / 'good'}" in again.change
    # a model of an older Inspector does not record it: the folder must be given
    save_model(replace(again, good_folder=None), root / "models")
    capsys.readouterr()
    assert main(["rebuild", "--product", "Gear 7", "--sampling-ratio", "0.05"] + common) == EXIT_ERROR
    assert "does not say which folder its good images came from" in capsys.readouterr().err
    assert load_model(root / "models", "Gear 7").version == again.version + 1


def test_a_file_name_that_is_not_utf8_is_printed_and_logged(station, tmp_path, capsys):
    _, common = station
    folder = tmp_path / "latin1"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as f:
        f.write(cv2.imencode(".png", make_part(96))[1].tobytes())
    assert main(["inspect", str(folder), "--product", "Gear 7"] + common) == EXIT_OK
    assert "caf\\xe9.png" in capsys.readouterr().out


def test_failures_go_to_the_log_file_beside_the_result_log(station, tmp_path, monkeypatch):
    _, common = station
    [path] = write_parts(tmp_path / "x", 1, seed=97)

    def explode(*args, **kwargs):
        raise RuntimeError("a failure nobody sees on a screen")

    monkeypatch.setattr("inspector.core.scoring.Inspector.inspect", explode)
    assert main(["inspect", str(path), "--product", "Gear 7", "--db", str(tmp_path / "log.db"),
                 "--models-dir", common[1]]) == EXIT_ERROR
    logged = (tmp_path / "inspector.log").read_text()
    assert "RuntimeError: a failure nobody sees on a screen" in logged and "Traceback" in logged


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_inspect_exits_130_and_loses_nothing(station, tmp_path, sig):
    root, common = station
    files = write_parts(tmp_path / "many", 200, seed=1000, size=128)
    db = tmp_path / "log.db"
    process = subprocess.Popen([sys.executable, "-m", "inspector.cli", "inspect", str(tmp_path / "many"),
                                "--product", "Gear 7", "--models-dir", common[1], "--db", str(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = [process.stdout.readline()]  # the first verdict: the line runs
    process.send_signal(sig)
    out, err = process.communicate(timeout=300)
    printed += [line for line in out.splitlines() if line.strip()]
    assert process.returncode == EXIT_INTERRUPTED, err
    with ResultStore(db) as store:
        assert store.count() == len(printed) < len(files)  # every printed verdict logged, no other


@pytest.mark.parametrize("args, said", [
    (["train", "GOOD", "--product", "New", "--tolerance", "-3"], "--tolerance: The tolerance must be 0 or more"),
    (["train", "GOOD", "--product", "New", "--sampling-ratio", "7"], "--sampling-ratio: The sampling ratio"),
    (["calibrate", "--product", "Gear 7", "--tolerance", "-5"], "--tolerance: The tolerance must be 0 or more"),
    (["rebuild", "GOOD", "--product", "Gear 7", "--sampling-ratio", "0"], "more than 0 and at most 1"),
    (["rollback", "--product", "Gear 7", "--version", "0"], "--version: must be 1 or more"),
    (["camera", "0", "--product", "Gear 7", "--rate", "-1"], "--rate: must be 0 or more"),
])
def test_every_argument_is_checked_before_any_work(station, args, said, capsys):
    root, common = station
    args = [str(root / "good") if a == "GOOD" else a for a in args]
    versions = sorted(p.name for p in (root / "models" / "Gear 7").iterdir())
    assert main(args + common) == EXIT_ERROR
    err = capsys.readouterr().err
    assert said in err and "Training" not in err and "extracting" not in err  # said at once, nothing read
    assert sorted(p.name for p in (root / "models" / "Gear 7").iterdir()) == versions
    assert not (root / "models" / "New").exists()


def test_train_says_the_predicted_false_rejects_and_a_failure_says_what_was_skipped(tmp_path, capsys):
    common = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    write_parts(tmp_path / "good", 12)
    assert main(["train", str(tmp_path / "good"), "--product", "P", "--sampling-ratio", "0.05"] + common) == EXIT_OK
    out = capsys.readouterr().out
    assert "On the line: at tolerance 3 (threshold" in out and "the predicted false rejects are" in out
    assert "of 12 good images" in out or "good images (" in out
    assert main(["defect", "--product", "P", *map(str, write_parts(tmp_path / "ng", 1, "stain", seed=5))]
                + common) == EXIT_OK
    assert main(["teach", "--defect", "--product", "P",  # its older name
                 *map(str, write_parts(tmp_path / "ng2", 1, "stain", seed=6))] + common) == EXIT_OK
    assert "'inspector teach --defect' is now called 'inspector defect'" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "good"), "--product", "P", "--sampling-ratio", "0.05"] + common) == EXIT_OK
    assert "the escapes 0 of 2 known defects" in capsys.readouterr().out  # known defects: the escapes too
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "half.png").write_bytes(b"\x89PNG\r\n")
    assert main(["train", str(tmp_path / "bad"), "--product", "Q"] + common) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Only 0 usable good image(s)" in err and "Skipped 1 file(s): half.png:" in err


def test_rollback_to_a_missing_version_lists_the_kept_ones(station, capsys):
    _, common = station
    assert main(["rollback", "--product", "Gear 7", "--version", "99"] + common) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "has no version 99: its kept versions are 1" in err and "train the product first" not in err


def test_a_mistyped_path_to_inspect_is_an_argument_error_not_a_logged_part(station, tmp_path, capsys):
    root, common = station
    [good] = write_parts(tmp_path / "ok", 1, seed=44)
    with ResultStore(root / "log.db") as store:
        before = store.count()
    assert main(["inspect", str(good), str(tmp_path / "typo.png"), "--product", "Gear 7"] + common) == EXIT_ERROR
    captured = capsys.readouterr()
    assert "No such file or folder:" in captured.err and "typo.png" in captured.err and "OK " not in captured.out
    with ResultStore(root / "log.db") as store:
        assert store.count() == before  # nothing inspected, nothing logged


def test_history_prints_its_counts_in_words(station, capsys):
    _, common = station
    assert main(["history"] + common) == EXIT_OK
    err = capsys.readouterr().err
    assert "inspected:" in err and " OK, " in err and "{" not in err


def test_a_camera_that_does_not_exist_is_said_once(station, capsys):
    """No camera 57: one message of ours (not an OpenCV warning per retry) until it is stopped."""
    root, common = station
    proc = subprocess.Popen([sys.executable, "-m", "inspector.cli", "camera", "57", "--product", "Gear 7"] + common,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stderr:  # bounded: the line says it within the first reconnects, then we stop it
        lines.append(line)
        if "Cannot open camera 57" in line:
            break
    with pytest.raises(subprocess.TimeoutExpired):  # it retries meanwhile (each second), saying nothing more
        proc.wait(timeout=2.5)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    text = "".join(lines) + rest
    assert text.count("Cannot open camera 57: no such camera, or another program uses it") == 1
    assert "[ WARN" not in text and "VIDEOIO" not in text  # no OpenCV warning


def test_an_edited_model_is_refused_until_the_engineer_signs_it(own, tmp_path, monkeypatch, capsys):
    """The edit of issue 19 (format 1 claimed, thresholds deleted, tolerance 50): a defect would
    pass. The line refuses it; only the engineer signs it, knowingly, as a new version on record."""
    import json

    root, common = own
    Accounts(accounts_path(root)).set_engineer("Eve", "2468")
    monkeypatch.delenv("INSPECTOR_PIN", raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    path = root / "models" / "Gear 7" / "v0001" / "model.json"
    meta = json.loads(path.read_text())
    bank = meta.pop("bank")
    for name in ("checksum", "signature", "threshold", "pixel_threshold"):
        meta.pop(name)
    meta |= {"format_version": 1, "bank_sha256": bank["sha256"]}
    meta["settings"]["tolerance"] = 50.0
    path.write_text(json.dumps(meta))
    bad = write_parts(tmp_path / "ng", 1, "stain", seed=41)
    args = ["--product", "Gear 7"] + common
    assert main(["inspect", str(bad[0])] + args) == EXIT_ERROR
    assert "not signed by this station" in capsys.readouterr().err
    assert main(["models"] + common) == EXIT_OK and "not signed" in capsys.readouterr().out
    assert main(["models", "--resign", "--version", "1"] + args) == EXIT_ERROR
    assert "Only an engineer may sign a model" in capsys.readouterr().err
    monkeypatch.setenv("INSPECTOR_PIN", "2468")
    assert main(["models", "--resign", "--version", "1"] + args) == EXIT_OK
    assert "as version 2" in capsys.readouterr().out
    signed = load_model(root / "models", "Gear 7")
    assert (signed.version, signed.settings.tolerance) == (2, 50.0)
    assert main(["inspect", str(bad[0])] + args) in (EXIT_OK, EXIT_NG)  # what the engineer signed decides
    with ResultStore(root / "log.db") as store:
        [event] = store.events("Gear 7")
        [row] = store.query()
    assert (event.kind, event.user) == ("resign", "Eve (engineer)") and "version 1" in event.old
    assert (row.model_id, row.model_version, row.threshold) == (signed.model_id, 2, pytest.approx(signed.threshold))


def test_a_file_named_twice_is_inspected_and_sorted_once(station, tmp_path, capsys):
    root, common = station
    [part] = write_parts(tmp_path / "line", 1, seed=70)
    db = ["--db", str(tmp_path / "log.db")]
    assert main(["inspect", str(part), str(part), str(tmp_path / "line"), "--sort", "--product", "Gear 7",
                 "--models-dir", common[1]] + db) == EXIT_OK
    assert capsys.readouterr().out.count("OK ") == 1
    assert [p.name for p in (tmp_path / "line" / "OK").iterdir()] == [part.name]
    with ResultStore(tmp_path / "log.db") as store:
        assert store.summary()["total"] == 1


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of 256 KB (tmpfs) to fill up: mounting needs root, which CI runs as."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (mount -t tmpfs: {done.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the disk of `folder` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            try:
                while f.write(b"x" * size):
                    pass
            except OSError:
                pass


def test_a_verdict_that_could_not_be_logged_is_never_reported_done(station, tmp_path, small_disk):
    """Disk full under inspect, the log file on the same disk: exit 2 and a clear message, no
    Python traceback, and every file whose verdict is not logged left where it was."""
    root, common = station
    files = write_parts(tmp_path / "line", 6, seed=80)
    db = small_disk / "log.db"
    holder = ResultStore(db)  # another program keeps the log open (its -wal and -shm stay)
    fill(small_disk)
    out = subprocess.run([sys.executable, "-m", "inspector.cli", "inspect", str(tmp_path / "line"), "--sort",
                          "--product", "Gear 7", "--models-dir", common[1], "--db", str(db)],
                         capture_output=True, text=True, timeout=300)
    (small_disk / "filler").unlink()
    holder.close()
    printed = [line for line in out.stdout.splitlines() if line.strip()]
    not_logged = [line for line in printed if line.endswith("(NOT LOGGED yet)")]
    assert len(printed) == len(files) and not_logged, out.stdout + out.stderr
    assert out.returncode == EXIT_ERROR, out.stderr
    assert f"error: {len(not_logged)} verdict(s) could NOT be logged" in out.stderr
    assert "Traceback" not in out.stderr and "Logging error" not in out.stderr, out.stderr
    with ResultStore(db) as store:
        logged = {Path(r.image_path).name for r in store.query()}
    assert len(logged) == len(files) - len(not_logged)
    left = {p.name for p in (tmp_path / "line").iterdir() if p.is_file()}
    assert left == {f.name for f in files} - logged  # only what is logged was moved


def test_ctrl_c_again_and_again_always_exits_130(station, tmp_path):
    """A second Ctrl-C stops at once, whenever it comes (it ended the process by the signal)."""
    root, common = station
    write_parts(tmp_path / "many", 60, seed=2000, size=128)
    db = tmp_path / "log.db"
    process = subprocess.Popen([sys.executable, "-m", "inspector.cli", "inspect", str(tmp_path / "many"),
                                "--product", "Gear 7", "--models-dir", common[1], "--db", str(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    printed = [process.stdout.readline()]  # the line runs
    process.send_signal(signal.SIGINT)
    for _ in range(20_000):  # Ctrl-C held down until it ends (bounded)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGINT)
        time.sleep(0.001)
    out, _ = process.communicate(timeout=300)
    printed += [line for line in out.splitlines() if line.strip()]
    assert process.returncode == EXIT_INTERRUPTED
    logged = len([p for p in printed if "NOT LOGGED" not in p])
    with ResultStore(db) as store:
        assert logged <= store.count() <= logged + 1  # every printed verdict; the one under way, if logged
