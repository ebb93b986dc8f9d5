"""The main window: the product bar, the four tabs, the message panel and the status bar."""
from __future__ import annotations

import html
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QComboBox, QHBoxLayout, QInputDialog, QLabel, QMainWindow,
                               QMessageBox, QPlainTextEdit, QPushButton, QSplitter, QTabWidget, QVBoxLayout,
                               QWidget)

from ..store.results import ResultStore
from .calibrate import CalibrateTab
from .history import HistoryTab
from .monitor import MonitorTab
from .session import Session, settings
from .teaching import TeachTab
from .train import TrainTab
from .views import RESOURCES, icon
from .worker import Worker

LEVEL_COLOURS = {"info": "#30343a", "warning": "#9a5b00", "error": "#c62828"}


def apply_style(app: QApplication) -> None:
    """The house look: Fusion, the stylesheet and the icon from resources/."""
    app.setStyle("Fusion")
    style = RESOURCES / "style.qss"
    if style.is_file():  # without it the window still works, in plain Fusion
        app.setStyleSheet(style.read_text(encoding="utf-8"))
    app.setWindowIcon(icon("app"))


class ProductBar(QWidget):
    """Choose, create, rename and delete products (recipes)."""

    def __init__(self, session: Session):
        super().__init__()
        self.setObjectName("product_bar")
        self.session = session
        self.combo = QComboBox()
        self.combo.setMinimumWidth(240)
        self.combo.currentIndexChanged.connect(lambda _: session.select(self.combo.currentData()))
        self.state = QLabel()
        self.state.setObjectName("product_state")
        title = QLabel("Product")
        title.setObjectName("heading")
        layout = QHBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.combo)
        self.buttons = []
        for text, name, slot in (("New…", "add", self._ask_new), ("Rename…", "edit", self._ask_rename),
                                 ("Delete", "delete", self._ask_delete)):
            button = QPushButton(icon(name), text)
            button.clicked.connect(slot)
            layout.addWidget(button)
            self.buttons.append(button)
        layout.addWidget(self.state, 1)
        session.changed.connect(self._show_state)
        session.busy_changed.connect(lambda busy: self.setEnabled(not busy))

    def reload(self, select: str | None = None) -> None:
        """List the products again and select `select` (or the first one)."""
        self.combo.blockSignals(True)
        self.combo.clear()
        for meta in self.session.products():
            self.combo.addItem(meta["product"], meta["product"])
        self.combo.setCurrentIndex(max(0, self.combo.findData(select)))
        self.combo.blockSignals(False)
        self.session.select(self.combo.currentData())

    def create(self, name: str) -> None:
        try:
            self.reload(self.session.create(name))
        except Exception as exc:  # noqa: BLE001 - a bad name or a folder problem: tell the operator
            self.session.error(exc)
        else:
            self.session.info(f"Product '{self.session.product}' created: choose its good images and train it.")

    def rename(self, new_name: str) -> None:
        try:
            self.reload(self.session.rename(new_name))
        except Exception as exc:  # noqa: BLE001
            self.session.error(exc)

    def delete(self) -> None:
        name = self.session.product
        try:
            self.session.delete()
        except Exception as exc:  # noqa: BLE001
            self.session.error(exc)
        else:
            self.session.info(f"Product '{name}' deleted; its history stays in the log.")
        self.reload()

    def _ask_new(self) -> None:
        name, ok = QInputDialog.getText(self, "New product", "Name of the new product:")
        if ok and name.strip():
            self.create(name)

    def _ask_rename(self) -> None:
        if self.session.product:
            name, ok = QInputDialog.getText(self, "Rename product", "New name:", text=self.session.product)
            if ok and name.strip() and name.strip() != self.session.product:
                self.rename(name)

    def _ask_delete(self) -> None:
        name = self.session.product
        if name and QMessageBox.question(
                self, "Delete product", f"Delete the product '{name}' and its model?\n"
                                        f"Its inspection history stays in the log.") == QMessageBox.StandardButton.Yes:
            self.delete()

    def _show_state(self) -> None:
        session, model = self.session, self.session.model
        for button in self.buttons[1:]:
            button.setEnabled(session.product is not None)
        if session.product is None:
            self.state.setText("Create a product to start.")
        elif model is None:
            self.state.setText("Not trained yet: go to Train.")
        else:
            self.state.setText(f"Trained on {model.counts.get('good_images')} good images · threshold "
                               f"{model.threshold:.4g} · sensitivity {model.settings.sigma:g} · "
                               f"{model.settings.backbone} {model.settings.image_size} px")


class LogPanel(QPlainTextEdit):
    """Messages and errors, newest last; never a dialog."""

    def __init__(self):
        super().__init__()
        self.setReadOnly(True)
        self.setMaximumBlockCount(2000)
        self.setPlaceholderText("Messages and errors appear here.")

    def add(self, level: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        tag = "" if level == "info" else f"{level.upper()}: "
        self.appendHtml(f'<span style="color:{LEVEL_COLOURS[level]}">{stamp}  {html.escape(tag + text)}</span>')


class MainWindow(QMainWindow):
    def __init__(self, models_dir: str | Path, db_path: str | Path):
        super().__init__()
        self.setWindowTitle("Inspector")
        self.setMinimumSize(1000, 640)
        self.session = session = Session(Path(models_dir), ResultStore(db_path))
        self.products = ProductBar(session)
        self.train = TrainTab(session)
        self.calibrate = CalibrateTab(session)
        self.monitor = MonitorTab(session)
        self.history = HistoryTab(session)
        self.teach = TeachTab(session)
        self.tabs = QTabWidget()
        for tab, name, text in ((self.train, "train", "Train"), (self.calibrate, "calibrate", "Calibrate"),
                                (self.teach, "calibrate", "Region && versions"),
                                (self.monitor, "monitor", "Monitor"), (self.history, "history", "History")):
            self.tabs.addTab(tab, icon(name), text)
        self.log = LogPanel()
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.setObjectName("main_split")
        self.split.addWidget(self.tabs)
        self.split.addWidget(self.log)
        self.split.setStretchFactor(0, 1)
        self.split.setSizes([640, 90])
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(6, 4, 6, 0)
        column.addWidget(self.products)
        column.addWidget(self.split, 1)
        self.setCentralWidget(central)
        session.message.connect(self._message)

        self._action(self, "Start / Stop", ["F5"], self._start_stop)
        self._action(self, "Quit", [QKeySequence.StandardKey.Quit], self.close)
        self._action(self, "Snap", ["F6"], self.monitor.snap)
        # Space only on the Monitor tab, so that elsewhere it still presses buttons
        self._action(self.monitor, "Snap", ["Space"], self.monitor.snap).setShortcutContext(
            Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._restore()
        self.products.reload(settings().value("product"))

    @staticmethod
    def _action(owner: QWidget, text: str, keys: list, slot) -> QAction:
        action = QAction(text, owner)
        action.setShortcuts(keys)
        action.triggered.connect(slot)
        owner.addAction(action)
        return action

    def _start_stop(self) -> None:
        tab = self.tabs.currentWidget()
        if hasattr(tab, "start_stop"):
            tab.start_stop()

    def _message(self, level: str, text: str) -> None:
        self.log.add(level, text)
        self.statusBar().showMessage(text, 15000 if level == "info" else 60000)

    # ---- remembered geometry ----------------------------------------------------------------
    def _splitters(self) -> list[QSplitter]:
        return [s for s in self.findChildren(QSplitter) if s.objectName()]

    def _restore(self) -> None:
        s = settings()
        if not self.restoreGeometry(s.value("window/geometry", b"")):
            self.resize(1366, 740)
        for splitter in self._splitters():
            state = s.value(f"splitters/{splitter.objectName()}")
            if state is not None:
                splitter.restoreState(state)
        self.tabs.setCurrentIndex(int(s.value("window/tab", 0)))

    def _remember(self) -> None:
        s = settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/tab", self.tabs.currentIndex())
        for splitter in self._splitters():
            s.setValue(f"splitters/{splitter.objectName()}", splitter.saveState())

    def closeEvent(self, event) -> None:
        """Stop every worker cleanly (the line finishes and logs its current item), then close."""
        self._remember()
        Worker.stop_all()
        self.session.store.close()
        super().closeEvent(event)
