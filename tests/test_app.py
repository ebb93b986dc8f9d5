"""The operator's window, driven for real: products, training, calibration, the line from a
watched folder and from a video file as the camera, the history, and closing mid-shift."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import cv2
import pytest
from PySide6.QtCore import QSettings, Qt, QTimer

from conftest import WAIT
from inspector.app import main
from inspector.app.window import MainWindow
from inspector.core.model_store import load_model
from inspector.store.results import ResultStore
from inspector.synthetic import make_part, write_parts


class Heartbeat:
    """Measures the longest gap between 10 ms timer ticks: how long the GUI thread was blocked."""

    def __init__(self):
        self.longest, self._last = 0.0, time.monotonic()
        self.timer = QTimer(interval=10)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self):
        now = time.monotonic()
        self.longest, self._last = max(self.longest, now - self._last), now


def test_products_are_created_renamed_deleted_and_remembered(open_window, tmp_path):
    models = tmp_path / "models"
    window = open_window(models)
    assert window.session.product is None
    window.products.create("Alpha")
    window.products.create("Beta")
    assert [window.products.combo.itemText(i) for i in range(window.products.combo.count())] == ["Alpha", "Beta"]
    assert window.session.product == "Beta" and (models / "Beta").is_dir()

    window.products.create("bad/name")
    assert "not a usable product name" in window.log.toPlainText()
    assert window.products.combo.count() == 2

    window.products.rename("Gamma")
    assert window.session.product == "Gamma" and (models / "Gamma").is_dir() and not (models / "Beta").exists()
    window.products.combo.setCurrentIndex(window.products.combo.findData("Alpha"))
    assert window.session.product == "Alpha"
    window.split.setSizes([400, 200])
    sizes = window.split.sizes()
    window.close()

    again = open_window(models)
    assert again.session.product == "Alpha"  # remembered between runs, with the splitters
    assert again.split.sizes() == sizes
    again.products.delete()
    assert not (models / "Alpha").exists()
    assert again.session.product == "Gamma"


def test_train_then_calibrate_the_threshold(open_window, tmp_path, qtbot):
    models = tmp_path / "models"
    write_parts(tmp_path / "good", 20)
    (tmp_path / "good" / "broken.png").write_bytes(b"not an image at all")
    window = open_window(models)
    window.products.create("Disc A")

    tab = window.train
    tab.folder.set_path(tmp_path / "good")
    qtbot.waitUntil(lambda: tab._scanner is None and tab.thumbnails.count() == 20, timeout=WAIT)
    assert "20 good image(s) will be used" in tab.count.text()
    assert not tab.warning.isHidden() and "broken.png" in tab.warning.text()

    heartbeat = Heartbeat()
    tab.start_training()
    assert tab.cancel.isEnabled() and not window.products.combo.isEnabled()  # busy: product locked
    qtbot.waitUntil(lambda: window.session.model is not None and tab._trainer is None, timeout=WAIT)
    heartbeat.timer.stop()
    assert heartbeat.longest < 0.5, f"the GUI thread was blocked for {heartbeat.longest:.2f} s"
    model = window.session.model
    assert load_model(models, "Disc A").model_id == model.model_id  # saved
    assert "Trained in" in tab.progress.label.text() and f"version {model.version}" in tab.progress.label.text()
    assert "Current model: version" in tab.summary.text()
    assert window.products.combo.isEnabled() and "1 unreadable" in window.log.toPlainText()

    # the tolerance moves the threshold line live; dragging the line gives the tolerance
    cal = window.calibrate
    window.tabs.setCurrentWidget(cal)
    cal.tolerance.setValue(5.0)
    assert cal.line.value() == pytest.approx(model.calibration.image_threshold(5.0))
    assert cal.threshold.text() == f"{model.calibration.image_threshold(5.0):.4g}"
    cal.line.setValue(model.calibration.image_threshold(2.0))  # what a drag does
    assert cal.tolerance.value() == pytest.approx(2.0)
    scores = model.calibration.image_scores
    rejected = sum(s >= model.calibration.image_threshold(2.0) for s in scores)
    assert f"{rejected} of {len(scores)} good images" in cal.false_rejects.text()

    write_parts(tmp_path / "defects", 4, "scratch", seed=50)
    cal.defect_folder.set_path(tmp_path / "defects")
    qtbot.waitUntil(lambda: cal._scorer is None and len(cal._defects.scores) == 4, timeout=WAIT)
    assert "0 of 4" in cal.escapes.text()  # every known defect scores above the threshold
    assert len(cal.defect_curve.getData()[1]) > 0

    assert cal.apply.isEnabled()
    cal.apply.click()
    qtbot.waitUntil(lambda: window.session.model.settings.tolerance == pytest.approx(2.0), timeout=WAIT)
    assert window.session.model.threshold == pytest.approx(model.calibration.image_threshold(2.0))
    assert load_model(models, "Disc A").version == window.session.model.version == model.version + 1
    assert model.settings.tolerance == 3.0  # the model the line may be using did not change under it

    # another sampling ratio: the bank is rebuilt from the features kept in memory
    cal.ratio.setValue(5.0)
    cal.rebuild.click()
    qtbot.waitUntil(lambda: window.session.model.settings.sampling_ratio == pytest.approx(0.05), timeout=WAIT)
    rebuilt = window.session.model
    assert rebuilt.counts["memory_bank"] > model.counts["memory_bank"]
    assert load_model(models, "Disc A").model_id == rebuilt.model_id

    # a cancelled training leaves the model as it was
    tab.start_training()
    tab.cancel_training()
    qtbot.waitUntil(lambda: tab._trainer is None, timeout=WAIT)
    assert "cancelled" in tab.progress.label.text()
    assert f"Current model: version {rebuilt.version}" in tab.summary.text()  # still shown after Cancel
    assert load_model(models, "Disc A").model_id == rebuilt.model_id
    assert window.session.model is rebuilt


def test_folder_watch_shows_verdicts_logs_them_and_survives_a_bad_file(line_window, tmp_path, qtbot):
    window, monitor = line_window, line_window.monitor
    db = tmp_path / "inspections.db"
    line = tmp_path / "line"
    line.mkdir()
    monitor.folder.set_path(line)
    monitor.sort_files.setChecked(True)
    monitor.archive.setChecked(True)
    monitor.archive_dir.set_path(tmp_path / "archive")
    qtbot.keyClick(window, Qt.Key.Key_F5)  # Start
    qtbot.waitUntil(lambda: monitor.running and "Watching" in window.log.toPlainText(), timeout=WAIT)

    write_parts(line, 3, seed=100)
    write_parts(line, 2, "stain", seed=110)
    qtbot.waitUntil(lambda: monitor.counts["inspected"] == 5, timeout=WAIT)
    assert (monitor.counts["OK"], monitor.counts["NG"]) == (3, 2)
    texts = {key: label.text() for key, label in monitor.counter_labels.items()}
    assert texts == {"inspected": "5", "OK": "3", "NG": "2", "ERROR": "0", "yield": "60.0 %"}
    qtbot.waitUntil(lambda: monitor.painted > 0, timeout=WAIT)
    assert monitor.verdict.text() in ("OK", "NG") and monitor.view.image.image is not None
    assert monitor.ng_strip.count() == 2
    assert sorted(p.name for p in (line / "NG").iterdir()) == ["stain_110.png", "stain_111.png"]
    assert len(list((line / "OK").iterdir())) == 3 and not list(line.glob("*.png"))
    assert len(list((tmp_path / "archive").rglob("*.jpg"))) == 5
    monitor.heat.setChecked(False)
    assert not monitor.view.heat.isVisible()
    monitor.heat.setChecked(True)
    monitor.opacity.setValue(80)
    assert monitor.view.heat.isVisible() and monitor.view.heat.opacity() == pytest.approx(0.8)

    # complete (it ends with IEND) but not a picture: an ERROR at once (a file cut short is waited for)
    (line / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    qtbot.waitUntil(lambda: monitor.counts["ERROR"] == 1, timeout=WAIT)
    assert "broken.png" in window.log.toPlainText() and "broken.png" in window.statusBar().currentMessage()
    write_parts(line, 1, seed=120)
    qtbot.waitUntil(lambda: monitor.counts["inspected"] == 7, timeout=WAIT)  # the line went on
    assert monitor.running

    history = window.history
    window.tabs.setCurrentWidget(history)
    qtbot.waitUntil(lambda: history.table.rowCount() == 7, timeout=WAIT)
    assert Counter(r.verdict for r in history.table.records) == {"OK": 4, "NG": 2, "ERROR": 1}
    error_row = next(i for i, r in enumerate(history.table.records) if r.verdict == "ERROR")
    assert "broken.png" in history.table.index(error_row, 7).data()
    history.verdict.setCurrentIndex(history.verdict.findData("NG"))
    qtbot.waitUntil(lambda: history.table.rowCount() == 2, timeout=WAIT)
    history.view_table.selectRow(0)  # its file was sorted into NG/: found there and inspected again
    qtbot.waitUntil(lambda: "Inspected again now" in history.details.text(), timeout=WAIT)
    assert history.image.image.image is not None and history.image._rects  # image, heatmap, boxes
    export = history.export(str(tmp_path / "ng.csv"))
    qtbot.waitUntil(lambda: not export.is_running(), timeout=WAIT)
    assert len((tmp_path / "ng.csv").read_text(encoding="utf-8-sig").splitlines()) == 3

    # closing mid-shift stops the line cleanly: every verdict shown is in the log
    window.tabs.setCurrentWidget(monitor)
    write_parts(line, 4, seed=130)
    qtbot.waitUntil(lambda: monitor.counts["inspected"] >= 8, timeout=WAIT)
    window.close()
    assert not monitor.running
    with ResultStore(db) as store:
        assert store.count() == monitor.counts["inspected"]
        assert store.summary() == {"OK": monitor.counts["OK"], "NG": monitor.counts["NG"], "ERROR": 1,
                                   "total": monitor.counts["inspected"]}


def test_video_file_as_camera_and_snap(line_window, tmp_path, qtbot):
    window, monitor = line_window, line_window.monitor
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(12):  # defective parts: NG whatever the compression does to the texture
        writer.write(cv2.cvtColor(make_part(300 + i, 256, "stain"), cv2.COLOR_RGB2BGR))
    writer.release()

    monitor.source.setCurrentIndex(monitor.source.findData("camera"))
    monitor.camera.setEditText(str(video))
    monitor.start_stop()
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)  # the video ends, the line stops
    assert f"{video}: ended." in window.log.toPlainText()
    inspected = monitor.counts["inspected"]
    assert 1 <= inspected <= 12 and monitor.counts["NG"] == inspected
    with ResultStore(tmp_path / "inspections.db") as store:
        assert store.count(verdict="NG") == inspected
        records = store.query()
    assert {r.source for r in records} == {"camera"}
    # NG frames are kept by default, and the log points at them: the evidence stays
    kept = sorted(monitor.frames_dir().glob("*.png"))
    assert len(kept) == inspected and {Path(r.image_path) for r in records} == set(kept)
    assert "oldest are dropped first" in monitor.frames_note.text() and "2 GB" in monitor.options_summary.text()
    # '#N' is the frame's number in the video (a camera's frame count), not a count of inspections
    numbers = sorted(int(r.image_path.rsplit("#", 1)[1][:-4]) for r in records)
    assert all(1 <= n <= 12 for n in numbers) and len(set(numbers)) == len(numbers)

    # on Snap only: nothing is inspected until F6 (a video long enough for any machine)
    long_video = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (256, 256))
    frame = cv2.cvtColor(make_part(400, 256, "stain"), cv2.COLOR_RGB2BGR)
    for _ in range(600):  # two minutes
        writer.write(frame)
    writer.release()
    monitor.camera.setEditText(str(long_video))
    monitor.new_shift()
    monitor.snap_only.setChecked(True)
    monitor.start_stop()
    qtbot.waitUntil(lambda: monitor.snap_button.isEnabled() and f"{long_video}: live." in window.log.toPlainText(),
                    timeout=WAIT)
    assert monitor.counts["inspected"] == 0
    qtbot.keyClick(window, Qt.Key.Key_F6)
    qtbot.waitUntil(lambda: monitor.counts["inspected"] == 1, timeout=WAIT)
    monitor.start_stop()  # Stop
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)
    assert monitor.counts["inspected"] == 1
    with ResultStore(tmp_path / "inspections.db") as store:
        snapped = store.query(limit=1)[0]
    assert "long.avi#" in snapped.image_path and 1 <= int(snapped.image_path.rsplit("#", 1)[1][:-4]) <= 600


def test_main_opens_the_window_on_the_given_folders(qapp, tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    shown = []

    def close_the_window():
        shown.extend(w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible())
        for window in shown:
            window.close()

    QTimer.singleShot(200, close_the_window)
    assert main(["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]) == 0
    assert len(shown) == 1 and shown[0].session.models_dir == tmp_path / "models"
    assert (tmp_path / "log.db").is_file()
