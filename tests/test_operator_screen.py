"""The operator's screen tells the truth, keeps the threshold locked for operators, records
every change, keeps its counts across restarts, refuses a second station on the same data,
and scores known defects from subfolders: driven through the real window (offscreen)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from conftest import PIN, PRODUCT, WAIT, copy_models
from inspector.app import listen_for_instances, main, show_first_instance
from inspector.cli import main as cli_main
from inspector.app.monitor import STALE_S
from inspector.app.window import MainWindow
from inspector.app.worker import Worker
from inspector.core.model_store import current_version
from inspector.instance import InstanceLock
from inspector.store.results import STATION
from inspector.synthetic import write_parts
from inspector.users import Accounts, accounts_path


def answer(button: QMessageBox.StandardButton, seen: list[str]) -> None:
    """Answer the next message box with `button` as soon as it is up, keeping its text."""
    def look() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            seen.append(box.text())
            box.button(button).click()
        else:
            QTimer.singleShot(20, look)

    QTimer.singleShot(0, look)


def start_watching(window, folder, qtbot) -> None:
    folder.mkdir(exist_ok=True)
    window.monitor.folder.set_path(folder)
    window.monitor.start_stop()
    qtbot.waitUntil(lambda: "first part" in window.monitor.detail.text(), timeout=WAIT)


def stop_line(window, qtbot) -> None:
    window.monitor.start_stop()
    qtbot.waitUntil(lambda: not window.monitor.running, timeout=WAIT)


def test_the_banner_tells_the_truth_through_source_loss_staleness_and_product_change(line_window, tmp_path, qtbot):
    window, monitor = line_window, line_window.monitor
    assert (monitor.banner_state(), monitor.verdict.text()) == ("stopped", "STOPPED")
    assert monitor.counter_labels["yield"].text() == "–"  # not 0 before the first part

    line = tmp_path / "line"
    line.mkdir()
    monitor.folder.set_path(line)
    window.tabs.setCurrentWidget(window.calibrate)
    qtbot.keyClick(window, Qt.Key.Key_F5)  # F5 starts the line from any tab
    qtbot.waitUntil(lambda: monitor.banner_state() == "waiting" and "first part" in monitor.detail.text(),
                    timeout=WAIT)
    assert monitor.running

    write_parts(line, 1, "stain", seed=100)
    qtbot.waitUntil(lambda: monitor.banner_state() == "NG", timeout=WAIT)
    assert "stain_100.png" in monitor.detail.text() and " ago" in monitor.detail.text()

    monitor.stale.setValue(1.0)  # no part for longer than expected: the verdict is stale, not live
    qtbot.waitUntil(lambda: monitor.banner_state() == "stale", timeout=WAIT)
    assert monitor.verdict.text() == "WAITING" and "Last part: NG, stain_100.png" in monitor.detail.text()
    monitor.stale.setValue(STALE_S)

    line.rename(tmp_path / "unplugged")  # the folder disappears
    qtbot.waitUntil(lambda: monitor.banner_state() == "lost", timeout=WAIT)
    assert monitor.verdict.text() == "NO SOURCE" and "is gone" in monitor.detail.text()
    assert "is gone" in window.log.toPlainText()
    (tmp_path / "unplugged").rename(line)
    qtbot.waitUntil(lambda: "is back" in window.log.toPlainText(), timeout=WAIT)
    write_parts(line, 1, seed=120)  # watched again: the next part is inspected
    qtbot.waitUntil(lambda: monitor.banner_state() == "OK", timeout=WAIT)
    assert "good_120.png" in monitor.detail.text()

    qtbot.keyClick(window, Qt.Key.Key_F5)  # Stop, still from the Calibrate tab
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)
    assert monitor.banner_state() == "stopped" and "Last part: OK, good_120.png" in monitor.detail.text()

    window.products.create("Untrained")  # another product: nothing of the last one stays
    assert window.session.product == "Untrained"
    assert monitor.banner_state() == "stopped" and "not trained" in monitor.detail.text()
    assert [monitor.counter_labels[k].text() for k in ("inspected", "NG", "yield")] == ["0", "0", "–"]
    assert monitor.ng_strip.count() == 0 and monitor.view.image.image is None
    monitor.start_stop()
    assert not monitor.running and "Train the product" in window.log.toPlainText()

    window.products.combo.setCurrentIndex(window.products.combo.findData(PRODUCT))  # back: its shift, from the log
    qtbot.waitUntil(lambda: monitor.ng_strip.count() == 1, timeout=WAIT)
    assert [monitor.counter_labels[k].text() for k in ("inspected", "OK", "NG")] == ["2", "1", "1"]
    assert "Last part" not in monitor.detail.text()


def test_a_camera_that_cannot_be_opened_is_a_lost_source_not_the_last_verdict(line_window, qtbot):
    monitor = line_window.monitor
    monitor.source.setCurrentIndex(monitor.source.findData("camera"))
    monitor.camera.setEditText("9")  # no such camera
    monitor.start_stop()
    qtbot.waitUntil(lambda: monitor.banner_state() == "lost", timeout=WAIT)
    assert "camera 9" in monitor.detail.text() and monitor.running
    stop_line(line_window, qtbot)
    assert monitor.banner_state() == "stopped"


def test_an_operator_cannot_change_the_threshold_an_engineer_unlocks_with_the_pin(
        open_window, trained_models, tmp_path, qtbot):
    models = tmp_path / "models"
    copy_models(trained_models, models)
    window = open_window(models, engineer=False)
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    cal, version = window.calibrate, window.session.model.version
    assert window.products.level.text() == "Operator"
    assert not cal.apply.isEnabled() and not cal.tolerance.isEnabled() and not cal.line.movable
    assert not cal.locked.isHidden() and not cal.rebuild.isEnabled()
    assert not window.train.start.isEnabled() and not any(b.isEnabled() for b in window.products.buttons)

    cal.tolerance.setValue(0.0)  # even when asked directly, nothing changes
    cal.apply_tolerance()
    cal.rebuild_bank()
    window.products.delete()
    window.teach.versions.table.selectRow(0)
    window.teach.versions.roll_back(confirm=False)
    window.teach.editor.save_region()
    log = window.log.toPlainText()
    for what in ("change the tolerance", "rebuild the memory bank", "delete a product", "roll back the model",
                 "change the inspection region"):
        assert f"Only an engineer may {what}" in log
    assert current_version(models, PRODUCT) == version and (models / PRODUCT).is_dir()

    dialog = window.products.ask_engineer()  # does not block: the line would run on
    assert not dialog.first and dialog.isVisible()
    dialog.pin.setText("0000")
    dialog.submit()
    assert "Wrong PIN" in dialog.problem.text() and dialog.isVisible() and not window.session.user.is_engineer
    dialog.pin.setText(PIN)
    dialog.submit()
    assert window.session.user.is_engineer and not dialog.isVisible()
    assert window.products.level.text() == "Engineer: Eve" and cal.apply.isEnabled() and cal.line.movable

    window.products.unlock.click()  # Lock: back to the operator
    assert not window.session.user.is_engineer and not cal.apply.isEnabled()


def test_the_first_start_sets_the_engineer_pin_stored_only_as_a_hash(qtbot, tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    window = MainWindow(tmp_path / "models", tmp_path / "inspections.db")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.products.dialog is not None and window.products.dialog.isVisible(), timeout=WAIT)
    dialog = window.products.dialog
    assert dialog.first and not window.session.user.is_engineer
    dialog.name.setText("Anna")
    for pin, again, problem in (("1357", "1358", "differ"), ("135", "135", "at least 4")):
        dialog.pin.setText(pin)
        dialog.again.setText(again)
        dialog.submit()
        assert problem in dialog.problem.text() and not accounts_path(tmp_path).exists()
    dialog.pin.setText("97531")
    dialog.again.setText("97531")
    dialog.submit()
    assert str(window.session.user) == "Anna (engineer)" and not dialog.isVisible()
    stored = accounts_path(tmp_path).read_text(encoding="utf-8")
    assert "97531" not in stored and len(json.loads(stored)["engineer"]["hash"]) == 64
    assert Accounts(accounts_path(tmp_path)).unlock("97531").name == "Anna"
    events = window.session.store.events(STATION)
    assert [(e.kind, e.user, e.detail) for e in events if e.kind == "engineer"] == [
        ("engineer", "Anna (engineer)", "engineer PIN set")]
    window.close()


def test_a_change_on_a_running_line_shows_its_rates_is_confirmed_and_recorded(line_window, tmp_path, qtbot):
    window, monitor, cal = line_window, line_window.monitor, line_window.calibrate
    defects = tmp_path / "defects"
    write_parts(defects / "scratch", 3, "scratch", seed=50)
    write_parts(defects / "stain", 3, "stain", seed=60)
    cal.defect_folder.set_path(defects)
    qtbot.waitUntil(lambda: cal._scorer is None and len(cal._defects.scores) == 6, timeout=WAIT)
    line = tmp_path / "line"
    start_watching(window, line, qtbot)

    old = window.session.model
    new_threshold = old.calibration.image_threshold(0.0)
    cal.tolerance.setValue(0.0)
    seen: list[str] = []
    answer(QMessageBox.StandardButton.No, seen)
    cal.apply_tolerance()
    assert len(seen) == 1 and f"{old.threshold:.4g} → {new_threshold:.4g}" in seen[0]
    assert "Predicted false rejects:" in seen[0] and "Predicted escapes:" in seen[0] and "of 6 known defects" in seen[0]
    assert current_version(window.session.models_dir, PRODUCT) == old.version  # No: nothing changed

    answer(QMessageBox.StandardButton.Yes, seen)
    cal.apply_tolerance()
    qtbot.waitUntil(lambda: window.session.model.version == old.version + 1, timeout=WAIT)
    event = window.session.store.events(PRODUCT, limit=1)[0]
    assert (event.kind, event.user) == ("tolerance", "Eve (engineer)")
    assert f"tolerance {old.settings.tolerance:g}" in event.old and "tolerance 0" in event.new

    write_parts(line, 1, seed=130)  # the line switched between items: the new version decides
    qtbot.waitUntil(lambda: monitor.counts["inspected"] == 1 and monitor.painted, timeout=WAIT)
    record = window.session.store.query(limit=1)[0]
    assert record.model_version == old.version + 1 and abs(record.threshold - new_threshold) < 1e-6 * new_threshold
    stop_line(window, qtbot)

    history = window.history
    window.tabs.setCurrentWidget(history)
    history.show_what.setCurrentIndex(history.show_what.findData("changes"))
    qtbot.waitUntil(lambda: history.changes.rowCount() > 0 and history.changes.index(0, 2).data()
                    == "tolerance changed", timeout=WAIT)
    row = [history.changes.index(0, c).data() for c in range(history.changes.columnCount())]
    assert row[1:4] == [PRODUCT, "tolerance changed", "Eve (engineer)"] and "tolerance 0" in row[5]


def test_shift_counters_and_ng_parts_survive_a_restart(open_window, trained_models, tmp_path, qtbot, capsys):
    models = tmp_path / "models"
    copy_models(trained_models, models)
    window = open_window(models)
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    line = tmp_path / "line"
    start_watching(window, line, qtbot)
    write_parts(line, 3, seed=100)
    write_parts(line, 2, "stain", seed=110)
    qtbot.waitUntil(lambda: window.monitor.counts["inspected"] == 5, timeout=WAIT)
    stop_line(window, qtbot)
    window.close()

    again = open_window(models)
    monitor = again.monitor
    again.tabs.setCurrentWidget(monitor)
    qtbot.waitUntil(lambda: monitor.ng_strip.count() == 2, timeout=WAIT)
    texts = {key: label.text() for key, label in monitor.counter_labels.items()}
    assert texts == {"inspected": "5", "OK": "3", "NG": "2", "ERROR": "0", "yield": "60.0 %"}
    assert cli_main(["shift", "--models-dir", str(models), "--db", str(tmp_path / "inspections.db")]) == 0
    assert f"{PRODUCT}: 5 inspected, 3 OK, 2 NG, 0 error(s), yield 60.0 %" in capsys.readouterr().out  # the CLI agrees

    item = monitor.ng_strip.item(0)  # double-click a part: it opens with its heatmap and boxes
    where = monitor.ng_strip.visualItemRect(item).center()
    qtbot.mouseClick(monitor.ng_strip.viewport(), Qt.MouseButton.LeftButton, pos=where)  # as a mouse does
    qtbot.mouseDClick(monitor.ng_strip.viewport(), Qt.MouseButton.LeftButton, pos=where)
    qtbot.waitUntil(lambda: len(monitor.dialogs) == 1 and monitor.dialogs[0].view.image.image is not None,
                    timeout=WAIT)
    dialog = monitor.dialogs[0]
    qtbot.waitUntil(lambda: "Inspected again" in dialog.details.text(), timeout=WAIT)
    assert dialog.view.heat.image is not None and dialog.view._rects and "stain_11" in dialog.windowTitle()
    dialog.accept()

    monitor.new_shift()  # a new shift starts from zero, and stays so after a restart
    assert [monitor.counter_labels[k].text() for k in ("inspected", "yield")] == ["0", "–"]
    assert monitor.ng_strip.count() == 0
    again.close()
    third = open_window(models)
    qtbot.waitUntil(lambda: third.session.model is not None, timeout=WAIT)
    assert third.monitor.counter_labels["inspected"].text() == "0"
    shifts = [e for e in third.session.store.events(STATION) if e.kind == "shift"]
    assert len(shifts) == 2 and shifts[0].user == "Eve (engineer)" and shifts[0].old == shifts[1].new


def test_starting_again_brings_the_running_station_to_the_front(open_window, tmp_path, qtbot, monkeypatch):
    """The operator double-clicks the icon while the station runs minimised: no error, the
    running window comes up (and a station that no longer runs answers nobody)."""
    db = tmp_path / "inspections.db"
    window = open_window(tmp_path / "models")
    lock = InstanceLock(db).acquire()  # as main() holds it for the running window
    server = listen_for_instances(lock.path, window)
    window.showMinimized()
    qtbot.waitUntil(window.isMinimized, timeout=WAIT)
    seen: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text: seen.append(text))
    assert main(["--models-dir", str(tmp_path / "models"), "--db", str(db)]) == 0
    qtbot.waitUntil(lambda: not window.isMinimized() and window.isVisible(), timeout=WAIT)
    # no second window (closed windows of earlier tests may not be deleted yet: only open ones count)
    assert seen == [] and [w for w in QApplication.topLevelWidgets()
                           if isinstance(w, MainWindow) and w.isVisible()] == [window]
    server.close()
    lock.release()
    assert not show_first_instance(lock.path, timeout_ms=2000)


def test_a_second_station_on_the_same_data_is_refused(qapp, tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    db = tmp_path / "inspections.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from inspector.instance import InstanceLock; "
                               "lock = InstanceLock(sys.argv[1]).acquire(); print('holding', flush=True); "
                               "sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        seen: list[str] = []
        answer(QMessageBox.StandardButton.Ok, seen)
        assert main(["--models-dir", str(tmp_path / "models"), "--db", str(db)]) == 2
        assert "already running" in seen[0] and f"process {holder.pid}" in seen[0]
        assert not [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)

    Accounts(accounts_path(tmp_path)).set_engineer("Eve", PIN)  # no first-start dialog in the way
    shown = []

    def close_when_shown():
        windows = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if not windows:
            QTimer.singleShot(20, close_when_shown)
        for window in windows:
            shown.append(window)
            window.close()

    QTimer.singleShot(0, close_when_shown)  # the first one has ended: the station starts
    assert main(["--models-dir", str(tmp_path / "models"), "--db", str(db)]) == 0 and len(shown) == 1


def test_known_defects_in_subfolders_what_no_longer_applies_and_a_rebuild_after_restart(
        open_window, trained_models, tmp_path, qtbot):
    models = tmp_path / "models"
    copy_models(trained_models, models)
    good = tmp_path / "good"
    write_parts(good, 20)
    window = open_window(models)
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    window.train.folder.set_path(good)  # the product's good images, as on the Train tab
    cal = window.calibrate
    defects = tmp_path / "defects"  # only subfolders, as a test set is laid out
    write_parts(defects / "scratch", 3, "scratch", seed=50)
    write_parts(defects / "stain", 2, "stain", seed=60)
    cal.defect_folder.set_path(defects)
    qtbot.waitUntil(lambda: cal._scorer is None and len(cal._defects.scores) == 5, timeout=WAIT)
    assert "Scored 5 known defect(s) of 2 kind(s)." == cal.defect_progress.label.text()
    assert "of 5 known defects" in cal.escapes.text() and len(cal.defect_curve.getData()[1]) > 0

    empty = tmp_path / "empty"
    (empty / "nothing here").mkdir(parents=True)
    cal.defect_folder.set_path(empty)  # what no longer applies is gone at once
    assert cal.defect_curve.getData()[0] is None or len(cal.defect_curve.getData()[1]) == 0
    assert "unknown" in cal.escapes.text()
    qtbot.waitUntil(lambda: cal._scorer is None, timeout=WAIT)
    assert "No image found" in cal.defect_progress.label.text()
    low, high = cal.plot.getViewBox().viewRange()[0]
    scores = window.session.model.calibration.image_scores
    assert low > 0 and low <= min(scores) and high >= max(scores)  # the range is the scores', not from 0
    window.close()

    again = open_window(models)  # a restart: no features in memory, the good images are read again
    qtbot.waitUntil(lambda: again.session.model is not None, timeout=WAIT)
    cal, version = again.calibrate, again.session.model.version
    assert "Reads the good images of" in cal.rebuild_note.text() and cal.rebuild.isEnabled()
    cal.ratio.setValue(5.0)
    cal.rebuild.click()
    qtbot.waitUntil(lambda: again.session.model.version == version + 1, timeout=WAIT)
    assert "Rebuilt in" in cal.rebuild_progress.label.text()
    assert again.session.model.settings.sampling_ratio == 0.05
    assert "Re-uses the patch features" in cal.rebuild_note.text()  # now in memory

    again.session.good = None
    good.rename(tmp_path / "moved")  # the good images are gone: it says why it cannot rebuild
    cal.rebuild_bank()
    assert "no longer there" in again.log.toPlainText()
    assert current_version(models, PRODUCT) == version + 1


def test_closing_does_not_wait_for_a_worker_stuck_in_a_call(qtbot):
    release = threading.Event()
    stuck = Worker(lambda job: release.wait(120)).start()  # deaf to its cancel request
    polite = Worker(lambda job: job.cancel.wait(120)).start()
    left = Worker.stop_all(timeout=0.5)
    assert left == [stuck._thread.name] and not polite.is_running() and stuck.is_running()
    release.set()
    qtbot.waitUntil(lambda: not stuck.is_running(), timeout=WAIT)


def test_a_damaged_accounts_file_keeps_the_station_locked_and_says_so(qtbot, tmp_path):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    accounts_path(tmp_path).write_text('{"format": "something else"}', encoding="utf-8")
    window = MainWindow(tmp_path / "models", tmp_path / "inspections.db")
    qtbot.addWidget(window)
    window.show()
    assert "is not an Inspector accounts file" in window.log.toPlainText()
    assert window.products.ask_engineer() is None and not window.session.user.is_engineer  # no new PIN set
    assert accounts_path(tmp_path).read_text(encoding="utf-8") == '{"format": "something else"}'
    window.close()
