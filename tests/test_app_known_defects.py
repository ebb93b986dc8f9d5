"""The window with defect heads: the Train tab's "Train on known defects" saves a version with
them (a bad folder is refused, said why); the Monitor then shows the classifier's heatmap and
probability, the regions' areas, and the regions accepted for their size. Without heads the
screen shows none of it."""
import shutil
from dataclasses import replace

import pytest

from conftest import PRODUCT, WAIT, known_defects_category
from inspector.core.model import Settings
from inspector.core.model_store import load_model, save_model
from inspector.core.training import train


@pytest.fixture
def category(tmp_path):
    category = known_defects_category(tmp_path / "disc")
    model, _ = train(PRODUCT, sorted((category / "train" / "good").glob("*.png")), Settings())
    save_model(model, tmp_path / "models")
    return category


def _inspect(monitor, qtbot, path):
    """Inspect a copy of the image (a file already in the log is skipped) and wait for it on screen."""
    painted = monitor.painted
    copy = path.parents[2] / f"part{painted}.png"  # beside the category, not among its known defects
    shutil.copy(path, copy)
    monitor.run("file", [copy])
    qtbot.waitUntil(lambda: monitor.painted > painted and not monitor.running, timeout=WAIT)


def _switches_heatmap(view):
    """The view offers the classifier's heatmap beside the bank's, and shows it when chosen."""
    assert not view.choice.isHidden() and not view.classifier_shown
    bank_heat = view.heat.image.copy()
    view.choice.setCurrentText("Defect classifier")
    assert view.classifier_shown and view.heat.image.max() <= 1.0 and not (view.heat.image == bank_heat).all()
    view.choice.setCurrentText("Memory bank")
    assert not view.classifier_shown and (view.heat.image == bank_heat).all()


def test_known_defects_are_learnt_from_the_train_tab_and_shown_on_the_monitor(open_window, category, tmp_path, qtbot):
    window = open_window(tmp_path / "models")
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    monitor, tab, stain = window.monitor, window.train, category / "test" / "stain" / "000.png"
    _inspect(monitor, qtbot, stain)  # no heads: no switch, no findings
    assert monitor.heatmap.isHidden() and monitor.findings.isHidden()

    tab.folder.set_path(category / "train" / "good")
    tab.defects.set_path(category / "test" / "stain")  # one kind only: refused, the model unchanged
    qtbot.waitUntil(lambda: tab.learn.isEnabled(), timeout=WAIT)
    tab.learn_defects()
    qtbot.waitUntil(lambda: tab._trainer is None, timeout=WAIT)
    assert "all of one kind" in tab.progress.label.text() and "all of one kind" in window.log.toPlainText()
    assert load_model(tmp_path / "models", PRODUCT).heads is None

    tab.defects.set_path(category / "test")
    tab.mm_per_px.setValue(0.1)
    tab.learn_defects()
    assert tab.cancel.isEnabled() and not tab.learn.isEnabled()
    qtbot.waitUntil(lambda: tab._trainer is None, timeout=WAIT)
    saved = load_model(tmp_path / "models", PRODUCT)
    assert saved.version == 2 and saved.heads is not None and saved.mm_per_px == pytest.approx(0.1)
    assert window.session.model.version == 2
    assert "12 known defect(s) of 2 kind(s) (12 with masks)" in tab.progress.label.text()

    _inspect(monitor, qtbot, stain)
    assert monitor._last.verdict == "NG" and not monitor.heatmap.isHidden()
    text = monitor.findings.text()
    assert "Defect classifier: probability" in text and "Defects: " in text and "mm²" in text
    bank_heat = monitor.view.heat.image.copy()
    monitor.heatmap.setCurrentText("Defect classifier")
    assert monitor.scale.name == "probability"
    assert monitor.view.heat.image.max() <= 1.0 and not (monitor.view.heat.image == bank_heat).all()
    labels = [item for item in monitor.view._rects if hasattr(item, "textItem")]
    assert labels and all("px" in label.textItem.toPlainText() for label in labels)
    qtbot.waitUntil(lambda: monitor.ng_strip.count() >= 1, timeout=WAIT)  # the part dialog says it too
    dialog = monitor.open_part(monitor.ng_strip.item(0))
    qtbot.waitUntil(lambda: "Defect classifier: probability" in dialog.details.text(), timeout=WAIT)
    _switches_heatmap(dialog.view)
    dialog.accept()
    history = window.history  # History shows the part the same way
    window.tabs.setCurrentWidget(history)
    qtbot.waitUntil(lambda: history.table.rowCount() >= 2, timeout=WAIT)
    history.view_table.selectRow(0)
    qtbot.waitUntil(lambda: "Defect classifier: probability" in history.details.text(), timeout=WAIT)
    _switches_heatmap(history.image)
    window.tabs.setCurrentWidget(monitor)

    # a product that accepts every region this small: the part is OK, its regions listed as accepted
    window.session.set_model(replace(window.session.model, min_defect_area=1e9))
    _inspect(monitor, qtbot, stain)
    assert monitor._last.verdict == "OK"
    assert "Accepted, smaller than 1e+09 mm²: " in monitor.findings.text()
    dashed = [item for item in monitor.view._rects if hasattr(item, "pen") and item.pen().style().name == "DashLine"]
    assert dashed
