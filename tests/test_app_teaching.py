"""Teaching from the window (issue 11), driven for real: an inspection region drawn with the
mouse and saved, 'this part is good' / 'is a defect' from the History, versions and roll-back."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import ENGINEER_USER, copy_models
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtWidgets import QMessageBox

from inspector.changes import Changes
from inspector import services
from inspector.app.session import settings
from inspector.app.window import MainWindow
from inspector.core.model_store import load_model
from inspector.data.images import save_image
from inspector.store.results import ResultStore
from inspector.synthetic import make_part, write_parts
from inspector.users import Accounts, accounts_path

PRODUCT = "Disc"
PIN = "2468"
WAIT = 120_000  # ms: generous, for a loaded 2-core machine (a wait ends as soon as its condition holds)


@pytest.fixture
def window(qtbot, tmp_path, trained_models):
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    models = tmp_path / "models"
    copy_models(trained_models, models)
    Accounts(accounts_path(tmp_path)).set_engineer("Eve", PIN)
    window = MainWindow(models, tmp_path / "inspections.db")
    qtbot.addWidget(window)
    window.show()
    window.session.unlock(PIN)  # teaching and roll-back are an engineer's
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    yield window
    window.close()


def _screen(editor, x: float, y: float) -> QPoint:
    """Where image pixel (x, y) is on the editor's view."""
    scene = editor.box.mapViewToScene(QPointF(x, y))
    return editor.view.mapFromScene(scene)


def test_draw_a_region_save_it_and_roll_it_back(window, qtbot, answer_box):
    window.tabs.setCurrentWidget(window.teach)
    editor, versions = window.teach.editor, window.teach.versions
    assert "whole image" in editor.status.text()
    editor.set_image(make_part(0))
    qtbot.wait(50)
    # an include rectangle dragged with the mouse over the disc ...
    viewport = editor.view.viewport()
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=_screen(editor, 40, 40))
    for step in range(1, 11):
        qtbot.mouseMove(viewport, _screen(editor, 40 + 18 * step, 40 + 18 * step))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=_screen(editor, 220, 220))
    assert len(editor.shapes) == 1 and editor.shapes[0].include and editor.shapes[0].kind == "rectangle"
    # the screen says that the drawn region is not saved yet, not that the whole image is inspected
    assert editor.status.text().startswith("Drawn, not saved: 1 area(s)") and "Save region" in editor.status.text()
    # ... and an exclude polygon clicked corner by corner, closed on its first corner
    editor.tools.button(3).click()
    for x, y in ((60, 60), (110, 60), (60, 110), (61, 61)):
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=_screen(editor, x, y))
        qtbot.wait(300)  # apart, so that no two clicks make a double click
    assert [s.include for s in editor.shapes] == [True, False] and editor.shapes[1].kind == "polygon"
    roi = editor.current_roi()
    assert roi[128, 128] and not roi[10, 10] and not roi[70, 70]
    assert editor.region.image is not None  # the region is shown over the image
    editor.save.click()
    qtbot.waitUntil(lambda: window.session.model.version == 2, timeout=WAIT)
    saved = load_model(window.session.models_dir, PRODUCT)
    assert np.array_equal(saved.roi, roi) and not editor.shapes
    assert window.session.store.events(PRODUCT)[0].kind == "region"
    assert "expected false rejects" in window.statusBar().currentMessage()

    qtbot.waitUntil(lambda: versions.table.rowCount() == 2, timeout=WAIT)
    assert versions.table.item(0, 4).text().startswith("inspection region")
    assert versions.selected_version() == 2 and not versions.rollback.isEnabled()  # the version in use
    versions.table.selectRow(1)  # version 1, the whole image
    assert versions.rollback.isEnabled()
    seen = []
    answer_box(QMessageBox.StandardButton.No, seen)  # asked first, with the line stopped too
    versions.rollback.click()
    qtbot.waitUntil(lambda: len(seen) == 1, timeout=WAIT)
    assert window.session.model.version == 2 and versions.table.rowCount() == 2  # No: nothing changed
    assert "Make version 1 the model of 'Disc' again?" in seen[0] and "saved as version 3 (now 2" in seen[0]
    assert "threshold" in seen[0] and "expected false rejects" in seen[0] and "→ the whole image" in seen[0]
    answer_box(QMessageBox.StandardButton.Yes, seen)
    versions.rollback.click()
    qtbot.waitUntil(lambda: window.session.model.version == 3, timeout=WAIT)
    assert window.session.model.roi is None and versions.table.rowCount() == 3
    assert "rollback to version 1" in versions.table.item(0, 4).text()
    # the selection rests on the version now in use: one more click cannot roll forward
    assert versions.selected_version() == 3 and not versions.rollback.isEnabled()
    assert versions.change.text().startswith("Version 3 (in use)")


def test_this_part_is_good_or_a_defect_from_the_history(window, qtbot, tmp_path, answer_box):
    session = window.session
    line = tmp_path / "line"
    bright = np.clip(make_part(60).astype(np.float32) * 1.35 + 10, 0, 255).astype(np.uint8)
    line.mkdir()
    save_image(line / "bright.png", bright)
    write_parts(line, 1, "scratch", seed=70)
    with ResultStore(tmp_path / "inspections.db") as store:
        services.run_line(session.models_dir, store, PRODUCT, "file", sorted(line.iterdir()), threading.Event(),
                          lambda outcome: None)
    history = window.history
    window.tabs.setCurrentWidget(history)
    qtbot.waitUntil(lambda: history.table.rowCount() == 2, timeout=WAIT)
    rows = {r.image_path.split("/")[-1]: i for i, r in enumerate(history.table.records)}
    assert {r.verdict for r in history.table.records} == {"NG"}
    buttons = history.part_buttons
    assert not buttons.good.isEnabled()
    history.view_table.selectRow(rows["bright.png"])
    assert buttons.good.isEnabled()
    before = session.model
    seen = []
    answer_box(QMessageBox.StandardButton.Yes, seen)  # teaching makes a new version: asked first, line stopped too
    buttons.good.click()
    assert "Teach bright.png as a good part of 'Disc'?" in seen[0] and "now version 1" in seen[0]
    assert not buttons.good.isEnabled()  # once per part
    qtbot.waitUntil(lambda: session.model is not None and session.model.version == 2, timeout=WAIT)
    message = window.statusBar().currentMessage()
    assert f"{before.threshold:.4g} → {session.model.threshold:.4g}" in message and "expected false rejects" in message
    assert f"Kept in {services.taught_dir(session.models_dir, PRODUCT)}: every later training" in message
    assert services.reinspect(session.models_dir, PRODUCT, line / "bright.png")[1].verdict == "OK"
    # the part on screen is inspected again with the taught model, not left saying 'NG now' of the old one
    qtbot.waitUntil(lambda: "current model (version 2): OK" in history.details.text(), timeout=WAIT)
    assert not buttons.good.isEnabled()  # still once per part

    history.view_table.selectRow(rows["scratch_070.png"])
    buttons.defect.click()
    known = services.known_defects_dir(session.models_dir, PRODUCT)
    qtbot.waitUntil(lambda: known.is_dir() and len(list(known.iterdir())) == 1, timeout=WAIT)
    qtbot.waitUntil(lambda: "known defect" in window.statusBar().currentMessage(), timeout=WAIT)
    assert [e.kind for e in session.store.events(PRODUCT)][:2] == ["defect", "teach"]

    # the taught part is kept with the product: the next training says it will use it too
    assert [p.name for p in services.taught_images(session.models_dir, PRODUCT)] == ["bright.png"]
    train = window.train
    window.tabs.setCurrentWidget(train)
    train.folder.set_path(write_parts(tmp_path / "good", 5)[0].parent)
    qtbot.waitUntil(lambda: train._scanner is None and train.thumbnails.count() == 5, timeout=WAIT)
    assert "5 good image(s) will be used" in train.count.text()
    assert "1 taught good image(s) kept with the product" in train.taught.text() and train.taught.isVisible()

def test_after_teaching_train_and_rebuild_say_they_use_the_taught_part_and_it_still_passes(window, qtbot, tmp_path,
                                                                                          answer_box):
    """Train in the window (its features are kept), teach a false reject from the History, then
    rebuild the memory bank at another ratio: the Train and Calibrate tabs say that the taught
    part is used, and it passes after the rebuild."""
    session, train, calibrate = window.session, window.train, window.calibrate
    write_parts(tmp_path / "good", 20)  # as the product was trained: the bright part is a false reject
    train.folder.set_path(tmp_path / "good")
    qtbot.waitUntil(lambda: train._scanner is None and train.start.isEnabled(), timeout=WAIT)
    train.start_training()
    qtbot.waitUntil(lambda: session.model.version == 2 and session.good is not None, timeout=WAIT)
    assert calibrate.rebuild_note.text().endswith("no image is read again.") and not train.taught.isVisible()

    line = tmp_path / "line"
    line.mkdir()
    save_image(line / "bright.png", np.clip(make_part(60).astype(np.float32) * 1.35 + 10, 0, 255).astype(np.uint8))
    with ResultStore(tmp_path / "inspections.db") as store:
        services.run_line(session.models_dir, store, PRODUCT, "file", [line / "bright.png"], threading.Event(),
                          lambda outcome: None)
    history = window.history
    window.tabs.setCurrentWidget(history)
    qtbot.waitUntil(lambda: history.table.rowCount() == 1, timeout=WAIT)
    assert history.table.records[0].verdict == "NG"
    history.view_table.selectRow(0)
    answer_box(QMessageBox.StandardButton.Yes, [])
    history.part_buttons.good.click()
    qtbot.waitUntil(lambda: session.model.version == 3, timeout=WAIT)
    [kept] = services.taught_images(session.models_dir, PRODUCT)
    assert "1 taught good image(s)" in train.taught.text() and str(kept.parent) in train.taught.text()
    assert "reads the 1 taught good image(s)" in calibrate.rebuild_note.text()

    calibrate.ratio.setValue(2.5)
    calibrate.rebuild.click()
    qtbot.waitUntil(lambda: session.model.version == 4 and calibrate._refitter is None, timeout=WAIT)
    assert "1 taught good image(s)" in session.model.change and session.model.counts["good_images"] == 21
    assert calibrate.rebuild_note.text().endswith("no image is read again.")  # its features are kept now
    assert services.reinspect(session.models_dir, PRODUCT, line / "bright.png")[1].verdict == "OK"

    session.good = None  # as after a restart, the Train tab's folder forgotten: the model says where its images are
    settings().remove(f"good_folder/{PRODUCT}")
    assert session.model.good_folder == str(tmp_path / "good")
    calibrate.rebuild.click()
    qtbot.waitUntil(lambda: session.model.version == 5 and calibrate._refitter is None, timeout=WAIT)
    assert f"from {tmp_path / 'good'} and 1 taught good image(s)" in session.model.change


def test_the_versions_list_is_readable_at_1366x768(window, qtbot):
    """Every column but the change fits beside the region at 1366x768, and the selected
    version's change is shown whole below the list."""
    window.resize(1366, 740)
    window.tabs.setCurrentWidget(window.teach)
    versions = window.teach.versions
    window.session.set_model(Changes(window.session.models_dir, window.session.store, ENGINEER_USER).set_tolerance(PRODUCT, 4.0))
    qtbot.waitUntil(lambda: versions.table.rowCount() == 2 and versions.table.viewport().width() > 0, timeout=WAIT)
    header, table = versions.table.horizontalHeader(), versions.table
    assert header.sectionViewportPosition(3) + header.sectionSize(3) <= table.viewport().width()
    assert not table.verticalHeader().isVisible()
    assert versions.change.text() == "Version 2 (in use): tolerance 3 -> 4"  # the version in use is selected
