"""PNGs of the real main window at 1366x768 and 1920x1080: every tab (Train, Calibrate, Region &
versions, Monitor, History with its inspections and its changes) and every state of the Monitor banner (stopped,
waiting, OK, NG, ERROR, stale, source lost), driven on generated parts as an engineer and an
operator would. Prints how tall the part is on the Monitor tab.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python build/screenshots.py out/screenshots

The pictures are taken from the X server's screen (what a person sees), not re-rendered."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from inspector.app.window import MainWindow, apply_style
from inspector.data.images import load_image
from inspector.synthetic import write_parts
from inspector.users import Accounts, accounts_path

SIZES = ((1366, 768), (1920, 1080))
PIN = "2468"


def wait(app: QApplication, condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.01)
    settle = time.monotonic() + 0.3  # let the last paints reach the screen
    while time.monotonic() < settle:
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "out/screenshots")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="inspector-screens-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(work / "settings"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_style(app)
    write_parts(work / "good", 30)
    (work / "good" / "copy_failed.png").write_bytes(b"not an image at all")
    write_parts(work / "defects" / "scratch", 6, "scratch", seed=200)  # a test folder: one subfolder per type
    write_parts(work / "defects" / "stain", 6, "stain", seed=300)
    write_parts(work / "defects" / "good", 4, seed=350)  # good parts in the test folder: scored as good
    parts = write_parts(work / "incoming", 20, seed=500)
    defects = write_parts(work / "incoming", 10, "stain", seed=400)
    Accounts(accounts_path(work)).set_engineer("Eve", PIN)
    window = MainWindow(work / "models", work / "inspections.db")
    window.move(0, 0)
    window.show()
    window.session.unlock(PIN)
    monitor, started = window.monitor, time.monotonic()

    def shot(tab, name: str, size: tuple[int, int]) -> None:
        window.tabs.setCurrentWidget(tab)
        wait(app, lambda: True, name)
        path = out / f"{name}_{size[0]}x{size[1]}.png"
        screen = app.primaryScreen().grabWindow(0, 0, 0, *size)  # the screen's pixels, not a re-render
        screen.save(str(path))
        print(f"{path}  ({time.monotonic() - started:.1f} s)")

    def banner(state: str):
        return lambda: monitor.banner_state() == state

    def arrive(path: Path, line: Path) -> None:
        count = monitor.counts["inspected"]
        shutil.copy(path, line / path.name)
        wait(app, lambda: monitor.counts["inspected"] > count and monitor.painted and
             monitor._newest[0].record.image_path.endswith(path.name), path.name)

    window.products.create("Bearing cover")
    window.train.folder.set_path(work / "good")
    wait(app, lambda: window.train._scanner is None and window.train.thumbnails.count() == 30, "the good images")
    window.train.start_training()
    wait(app, lambda: window.session.model is not None and window.train._trainer is None, "training")
    for size in SIZES:  # what the training predicts, said when it ends
        window.resize(*size)
        wait(app, lambda: window.width() == size[0], "the size")
        shot(window.train, "train_trained", size)
    window.calibrate.defect_folder.set_path(work / "defects")
    wait(app, lambda: window.calibrate._scorer is None and len(window.calibrate._defects.scores) == 12, "defect scores")
    window.calibrate.separate.click()  # the proposal, with what it rests on
    window.resize(*SIZES[0])
    shot(window.calibrate, "calibrate_proposal", SIZES[0])
    window.resize(*SIZES[1])
    shot(window.calibrate, "calibrate_proposal", SIZES[1])
    window.calibrate.tolerance.setValue(4.0)
    window.calibrate.apply_tolerance()  # a change, recorded: History shows it
    wait(app, lambda: window.session.model.version == 2, "the new tolerance")

    window.teach.editor.set_image(load_image(work / "good" / "good_000.png"))

    line = work / "line"
    line.mkdir()
    monitor.folder.set_path(line)
    monitor.stale.setValue(30.0)
    for number, size in enumerate(SIZES):
        window.resize(*size)
        wait(app, lambda: window.width() == size[0], "the size")
        shot(window.train, "train", size)
        shot(window.calibrate, "calibrate", size)
        shot(window.teach, "region_versions", size)
        window.tabs.setCurrentWidget(monitor)
        monitor.options.show()
        monitor.options.move(420, 200)
        shot(monitor, "monitor_options", size)
        monitor.options.hide()
        shot(monitor, "monitor_stopped", size)
        monitor.start_stop()
        wait(app, lambda: "first part" in monitor.detail.text(), "waiting")
        shot(monitor, "monitor_waiting", size)
        for path in parts[10 * number:10 * number + 4]:
            arrive(path, line)
        shot(monitor, "monitor_OK", size)
        if size == SIZES[0]:
            print(f"the part is {monitor.view.shown_height():.0f} px tall on the Monitor tab at {size[0]}x{size[1]}")
        for path in defects[5 * number:5 * number + 3]:
            arrive(path, line)
        shot(monitor, "monitor_NG", size)
        if size == SIZES[0]:  # an NG part opened from the strip
            dialog = monitor.open_part(monitor.ng_strip.item(0))
            wait(app, lambda: "Inspected again" in dialog.details.text(), "the NG part")
            shot(monitor, "monitor_ng_part", size)
            dialog.accept()
        (line / f"copy_failed_{number}.png").write_bytes(b"not an image at all")
        wait(app, banner("ERROR"), "an ERROR")
        shot(monitor, "monitor_ERROR", size)
        monitor.stale.setValue(1.0)
        wait(app, banner("stale"), "a stale verdict")
        shot(monitor, "monitor_stale", size)
        (line / f"half_{number}.png").write_bytes(b"")  # a file still being written
        wait(app, lambda: "Waiting for half_" in monitor.detail.text(), "the waited-for file")
        wait(app, lambda: "2 s so far" in monitor.detail.text() or "3 s so far" in monitor.detail.text(), "seconds")
        shot(monitor, "monitor_waiting_file", size)
        monitor.stale.setValue(30.0)
        line.rename(work / "line_unplugged")
        wait(app, banner("lost"), "the source lost")
        shot(monitor, "monitor_lost", size)
        (work / "line_unplugged").rename(line)
        wait(app, lambda: monitor.banner_state() != "lost", "the source back")
        monitor.start_stop()
        wait(app, lambda: not monitor.running, "the line to stop")
        history = window.history
        window.tabs.setCurrentWidget(history)
        history.show_what.setCurrentIndex(0)
        wait(app, lambda: history.table.rowCount() >= 8, "the history")
        ng_row = next(i for i, r in enumerate(history.table.records) if r.verdict == "NG")
        history.view_table.selectRow(ng_row)
        wait(app, lambda: "Inspected again" in history.details.text(), "the history image")
        shot(history, "history", size)
        history.show_what.setCurrentIndex(1)
        wait(app, lambda: history.changes.rowCount() >= 3, "the changes")
        shot(history, "history_changes", size)
        history.show_what.setCurrentIndex(0)
    window.session.lock()  # the operator's view, and the engineer's PIN asked
    window.resize(*SIZES[0])
    for size in SIZES:
        window.resize(*size)
        wait(app, lambda: window.width() == size[0], "the size")
        shot(window.calibrate, "calibrate_operator", size)
        shot(window.train, "train_operator", size)
        shot(window.teach, "region_versions_operator", size)
        window.tabs.setCurrentWidget(window.history)
        shot(window.history, "history_operator", size)
    window.resize(*SIZES[0])
    dialog = window.products.ask_engineer()
    dialog.move(470, 250)
    shot(window.calibrate, "engineer_unlock", SIZES[0])
    dialog.reject()
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
