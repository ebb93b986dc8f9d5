"""Every number on the screen is true, and every refusal says why (issue 17): driven through
the real window (offscreen) on generated parts."""
from __future__ import annotations

import shutil

import numpy as np
from PySide6.QtCore import QRect

from conftest import ENGINEER_USER, PIN, PRODUCT, WAIT, copy_models
from inspector.changes import Changes
from inspector import services
from inspector.app.views import DISPLAY_SIZE, ProgressPanel
from inspector.data.images import save_image
from inspector.frames import frame_file_name, part_name
from inspector.synthetic import make_part, write_parts


def test_known_defects_with_good_parts_and_a_proposal_that_says_what_it_rests_on(line_window, tmp_path, qtbot):
    window = line_window
    cal = window.calibrate
    window.tabs.setCurrentWidget(cal)
    test = tmp_path / "test"  # the usual test folder: good/ beside one subfolder per kind
    write_parts(test / "good", 4, seed=81)
    write_parts(test / "stain", 3, "stain", seed=82)
    cal.defect_folder.set_path(test)
    qtbot.waitUntil(lambda: cal._scorer is None and len(cal._defects.good_scores) == 4, timeout=WAIT)
    assert len(cal._defects.scores) == 3
    assert cal.defect_progress.label.text() == ("Scored 3 known defect(s) of 1 kind(s) and 4 good part(s) "
                                                "(its good/ subfolder, scored as good).")
    assert "of 3 known defects" in cal.escapes.text()  # the good parts are not counted as escapes
    assert "of 4 good parts of the defects folder" in cal.false_rejects.text()
    assert cal.separate.isEnabled()
    cal.separate.click()
    proposal = services.propose_threshold(window.session.model, cal._defects)
    assert cal.tolerance.value() == round(proposal.tolerance, 2)
    text = cal.proposal.text()
    assert cal.proposal.isVisible() and "resting on 3 known defect(s) of 1 kind(s)" in text
    assert "It rests on only 3 known defect(s) of 1 kind(s)" in text  # few: said, in view
    good = list(window.session.model.calibration.image_scores) + cal._defects.good_scores
    assert max(good) < proposal.threshold <= (max(good) + min(cal._defects.scores)) / 2 + 1e-9


def test_training_ends_with_the_predicted_false_rejects_and_the_true_version(open_window, trained_models, tmp_path,
                                                                             qtbot):
    models = tmp_path / "models"
    copy_models(trained_models, models)
    window = open_window(models)
    session = window.session
    qtbot.waitUntil(lambda: session.model is not None, timeout=WAIT)
    for tolerance in (2.0, 4.0):  # the product is at version 3 before this training
        session.set_model(Changes(models, session.store, ENGINEER_USER).set_tolerance(PRODUCT, tolerance))
    Changes(models, session.store, ENGINEER_USER).add_known_defects(PRODUCT, write_parts(tmp_path / "ng", 2, "stain", seed=91))
    train = window.train
    window.tabs.setCurrentWidget(train)
    train.folder.set_path(write_parts(tmp_path / "good", 12)[0].parent)
    qtbot.waitUntil(lambda: train._scanner is None and train.start.isEnabled(), timeout=WAIT)
    train.start_training()
    qtbot.waitUntil(lambda: train._trainer is None and session.model.version == 4, timeout=WAIT)
    said = train.progress.label.text()
    assert f"version 4 of '{PRODUCT}' saved" in said and "the predicted false rejects are" in said
    assert "of 12 good images" in said or "good images (" in said
    assert "the escapes 0 of 2 known defects" in said  # the product's known defects were scored too
    session.set_model(Changes(models, session.store, ENGINEER_USER).set_tolerance(PRODUCT, 5.0))
    assert "version 4" not in train.progress.label.text()  # not left saying a version that is no longer in use


def test_the_time_left_is_said_of_the_step_under_way(qtbot):
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    panel.begin("Training…", steps=3)
    panel._since = 0.0  # the step began long ago: an estimate is given
    panel.step("extracting features", 5, 10)
    assert panel.label.text().startswith("Step 1 of 3, extracting features: 5 of 10")
    panel.step("extracting features", 6, 10)
    panel._since -= 10.0
    panel.step("extracting features", 7, 10)
    assert "left in this step" in panel.label.text()
    panel.step("sampling", 1, 4)
    assert panel.label.text().startswith("Step 2 of 3, sampling")


def test_locked_controls_say_why_in_visible_text(open_window, trained_models, tmp_path, qtbot):
    models = tmp_path / "models"
    copy_models(trained_models, models)
    window = open_window(models, engineer=False)
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    window.resize(1366, 740)
    for tab, note in ((window.train, window.train.locked), (window.calibrate, window.calibrate.locked),
                      (window.teach, window.teach.editor.locked), (window.teach, window.teach.versions.locked)):
        window.tabs.setCurrentWidget(tab)
        qtbot.waitUntil(note.isVisible, timeout=WAIT)
        assert note.text().startswith("Locked: only the engineer may") and "Engineer…" in note.text()
        # whole, not clipped, once laid out
        qtbot.waitUntil(lambda: note.heightForWidth(note.width()) <= note.height(), timeout=WAIT)
    assert not window.train.start.isEnabled() and "train a product" in window.train.locked.text()
    assert window.history.part_buttons.good.text() == "This part is good (engineer only)"
    window.session.unlock(PIN)
    for note in (window.train.locked, window.calibrate.locked, window.teach.editor.locked,
                 window.teach.versions.locked):
        assert note.isHidden()
    assert window.history.part_buttons.good.text() == "This part is good"


def test_a_file_being_waited_for_is_said_with_its_name_and_how_long(line_window, tmp_path, qtbot):
    window, monitor = line_window, line_window.monitor
    line = tmp_path / "line"
    line.mkdir()
    monitor.folder.set_path(line)
    monitor.stale.setValue(1.0)
    monitor.start_stop()
    qtbot.waitUntil(lambda: "first part" in monitor.detail.text(), timeout=WAIT)
    (line / "half.png").write_bytes(b"")  # zero bytes: still being written
    qtbot.waitUntil(lambda: "Waiting for half.png to be completely written" in monitor.detail.text(), timeout=WAIT)
    assert monitor.verdict.text() == "WAITING" and "s so far" in monitor.detail.text()
    assert "ERROR after 30 s" in monitor.detail.text()
    assert "Waiting for half.png" in window.log.toPlainText()  # said once in the messages too
    monitor.start_stop()
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)


def test_the_colour_scale_is_the_model_in_use_from_the_start(line_window, tmp_path, qtbot):
    monitor, session = line_window.monitor, line_window.session
    line = tmp_path / "line"
    [part] = write_parts(tmp_path / "parts", 1, seed=93)
    line.mkdir()
    monitor.folder.set_path(line)
    monitor.start_stop()
    qtbot.waitUntil(lambda: "first part" in monitor.detail.text(), timeout=WAIT)
    shutil.copy(part, line / part.name)
    qtbot.waitUntil(lambda: monitor.painted == 1, timeout=WAIT)
    monitor.start_stop()
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)
    session.set_model(Changes(session.models_dir, session.store, ENGINEER_USER).set_tolerance(PRODUCT, 6.0))
    monitor.start_stop()  # the new version: the scale shows its threshold before the first part
    qtbot.waitUntil(lambda: monitor.running, timeout=WAIT)
    assert monitor.scale.threshold == session.model.threshold
    monitor.start_stop()
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)


def test_a_large_part_is_painted_small_and_its_dialog_leaves_the_banner_in_view(line_window, tmp_path, qtbot):
    window, monitor = line_window, line_window.monitor
    window.resize(1366, 740)
    line = tmp_path / "line"
    line.mkdir()
    monitor.folder.set_path(line)
    monitor.start_stop()
    qtbot.waitUntil(lambda: "first part" in monitor.detail.text(), timeout=WAIT)
    big = np.kron(make_part(7, defect="stain"), np.ones((12, 12, 1), np.uint8))  # 3072 px square
    save_image(tmp_path / "big.png", big)
    shutil.copy(tmp_path / "big.png", line / "big.png")
    qtbot.waitUntil(lambda: monitor.painted == 1, timeout=WAIT)
    assert max(monitor.view.image.image.shape[:2]) == DISPLAY_SIZE  # made small in the worker
    assert monitor.banner_state() == "NG"
    qtbot.waitUntil(lambda: monitor.ng_strip.count() == 1, timeout=WAIT)
    dialog = monitor.open_part(monitor.ng_strip.item(0))
    qtbot.waitUntil(lambda: "Inspected again" in dialog.details.text(), timeout=WAIT)
    banner = QRect(monitor.banner.mapToGlobal(monitor.banner.rect().topLeft()), monitor.banner.size())
    assert not dialog.frameGeometry().intersects(banner)
    assert max(dialog.view.image.image.shape[:2]) == DISPLAY_SIZE
    dialog.accept()
    monitor.start_stop()
    qtbot.waitUntil(lambda: not monitor.running, timeout=WAIT)


def test_a_region_image_is_read_off_the_gui_thread_and_made_small(line_window, tmp_path, qtbot):
    editor = line_window.teach.editor
    big = np.kron(make_part(3), np.ones((10, 10, 1), np.uint8))
    save_image(tmp_path / "big.png", big)
    editor.open_image(tmp_path / "big.png")
    qtbot.waitUntil(lambda: editor.image is not None, timeout=WAIT)
    assert max(editor.image.shape[:2]) == DISPLAY_SIZE


def test_a_camera_frame_has_one_short_name_kept_or_not():
    source = "/tmp/gui/parts.avi#13"
    assert part_name(source) == "parts.avi#13"
    kept = f"/data/ng_frames/{frame_file_name('2026-12-04T18:41:53.542+00:00', source)}"
    assert kept.endswith("_parts.avi#13.png") and part_name(kept) == "parts.avi#13"
    assert part_name("/line/part_001.png") == "part_001.png" and part_name(None) == "frame"


def test_a_stream_frame_keeps_its_host_in_its_short_name():
    kept = frame_file_name("2026-12-04T18:41:53.542+00:00", "rtsp://cam/stream#12")
    assert part_name("rtsp://cam/stream#12") == "cam_stream#12" == part_name(f"/ng_frames/{kept}")
