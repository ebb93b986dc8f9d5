"""Save a PNG of the main window in each tab (Train, Calibrate, Monitor with a live NG result,
History with rows) at 1366x768, driving the real window on generated parts.

    xvfb-run -a .venv/bin/python build/screenshots.py out/screenshots
    (or QT_QPA_PLATFORM=offscreen .venv/bin/python build/screenshots.py out/screenshots)
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from inspector.app.window import MainWindow, apply_style
from inspector.synthetic import write_parts

SIZE = (1366, 768)


def wait(app: QApplication, condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.01)
    for _ in range(20):  # let the last paints through
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
    (work / "good" / "copy_failed.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_parts(work / "defects", 6, "scratch", seed=200)
    write_parts(work / "defects", 6, "stain", seed=300)
    window = MainWindow(work / "models", work / "inspections.db")
    window.resize(*SIZE)
    window.show()

    started = time.monotonic()

    def shot(tab, name: str) -> None:
        window.tabs.setCurrentWidget(tab)
        wait(app, lambda: True, name)
        path = out / f"{name}.png"
        window.grab().save(str(path))
        print(f"{path}  ({time.monotonic() - started:.1f} s)")

    window.products.create("Bearing cover")
    window.train.folder.set_path(work / "good")
    wait(app, lambda: window.train._scanner is None and window.train.thumbnails.count() == 30, "the good images")
    window.train.start_training()
    wait(app, lambda: window.session.model is not None and window.train._trainer is None, "training")
    shot(window.train, "train")

    window.calibrate.defect_folder.set_path(work / "defects")
    wait(app, lambda: window.calibrate._scorer is None and len(window.calibrate._defects) == 12, "defect scores")
    window.calibrate.sigma.setValue(4.0)
    shot(window.calibrate, "calibrate")

    line = work / "line"
    line.mkdir()
    window.tabs.setCurrentWidget(window.monitor)
    window.monitor.folder.set_path(line)
    window.monitor.start_stop()
    parts = write_parts(work / "incoming", 8) + write_parts(work / "incoming", 3, "stain", seed=400)
    corrupt = work / "incoming" / "cut_off.png"
    corrupt.write_bytes(parts[0].read_bytes()[:500])
    for path in (*parts[:5], corrupt, *parts[5:]):
        shutil.copy(path, line / path.name)
        wait(app, lambda n=path.name: any(r.image_path and r.image_path.endswith(n) for r in
                                           window.session.store.query(limit=1)), path.name)
    wait(app, lambda: window.monitor.counts["inspected"] == len(parts) + 1, "the line")
    shot(window.monitor, "monitor")

    window.tabs.setCurrentWidget(window.history)
    wait(app, lambda: window.history.table.rowCount() == len(parts) + 1, "the history")
    ng_row = next(i for i, r in enumerate(window.history.table.records) if r.verdict == "NG")
    window.history.view_table.selectRow(ng_row)
    wait(app, lambda: window.history.image.image.image is not None, "the history image")
    shot(window.history, "history")
    window.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
