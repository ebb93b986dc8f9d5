"""The main window: the product bar (with who is at the station), the four tabs, the message
panel and the status bar."""
from __future__ import annotations

import html
import logging
import time
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout,
                               QInputDialog, QLabel, QLineEdit, QMainWindow, QMessageBox, QPlainTextEdit,
                               QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from ..changes import KINDS
from ..common import login_name
from ..errors import InspectorError
from ..store.results import ResultStore
from ..users import MIN_PIN, Accounts, accounts_path
from .calibrate import CalibrateTab
from .history import HistoryTab
from .monitor import MonitorTab
from .session import Session, settings
from .teaching import TeachTab
from .train import TrainTab
from .views import RESOURCES, icon
from .worker import Worker

log = logging.getLogger(__name__)
LEVEL_COLOURS = {"info": "#30343a", "warning": "#9a5b00", "error": "#c62828"}
IDLE_LOCK_MS = 15 * 60 * 1000  # an unlocked station locks itself after this long without input


def apply_style(app: QApplication) -> None:
    """The house look: Fusion, the stylesheet and the icon from resources/."""
    app.setStyle("Fusion")
    style = RESOURCES / "style.qss"
    if style.is_file():  # without it the window still works, in plain Fusion
        app.setStyleSheet(style.read_text(encoding="utf-8"))
    app.setWindowIcon(icon("app"))


class EngineerDialog(QDialog):
    """Set the engineer's PIN (first start: name, PIN twice) or unlock with it. Wrong input is
    said in the dialog, which stays open; `done` only on success."""

    def __init__(self, session: Session, parent=None):
        super().__init__(parent)
        self.session = session
        self.first = not session.accounts.is_set_up()
        self.setWindowTitle("Set the engineer PIN" if self.first else "Unlock as engineer")
        self.name = QLineEdit(login_name())
        self.pin = QLineEdit()
        self.again = QLineEdit()
        for edit in (self.pin, self.again):
            edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.problem = QLabel()
        self.problem.setObjectName("warning")
        self.problem.setWordWrap(True)
        self.problem.hide()
        form = QFormLayout(self)
        if self.first:
            intro = QLabel(f"First start of this station: set the PIN (at least {MIN_PIN} characters) that "
                           f"lets an engineer train, change the tolerance or the memory bank, and manage "
                           f"products. Operators run the line and review results without it.")
            intro.setWordWrap(True)
            form.addRow(intro)
            form.addRow("Engineer's name", self.name)
            form.addRow("PIN", self.pin)
            form.addRow("PIN again", self.again)
        else:
            form.addRow(QLabel(f"Engineer: {session.accounts.engineer_name()}"))
            form.addRow("PIN", self.pin)
        form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.submit)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.setMinimumWidth(420)

    def submit(self) -> None:
        try:
            if self.first:
                if self.pin.text() != self.again.text():
                    raise InspectorError("The two PINs differ: type the same PIN twice.")
                user = self.session.set_engineer(self.name.text(), self.pin.text())
                self.session.info(f"Engineer PIN set for {user.name}; the station is unlocked.")
            else:
                user = self.session.unlock(self.pin.text())
                self.session.info(f"Unlocked: {user}.")
        except InspectorError as exc:
            self.problem.setText(str(exc))
            self.problem.show()
            self.pin.clear()
            self.again.clear()
            return
        self.accept()


class ProductBar(QWidget):
    """Choose, create, rename and delete products (recipes); who is at the station."""

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
        for kind, name, slot in (("create", "add", self._ask_new), ("rename", "edit", self._ask_rename),
                                 ("delete", "delete", self._ask_delete)):
            button = QPushButton(icon(name), KINDS[kind].label)
            button.clicked.connect(slot)
            layout.addWidget(button)
            self.buttons.append(button)
        layout.addWidget(self.state, 1)
        self.level = QLabel()
        self.level.setObjectName("level")
        self.unlock = QPushButton()
        self.unlock.clicked.connect(self._unlock_clicked)
        layout.addWidget(self.level)
        layout.addWidget(self.unlock)
        self.dialog: EngineerDialog | None = None
        session.changed.connect(self._show_state)
        session.user_changed.connect(self._show_state)
        session.busy_changed.connect(self._show_state)

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
        if not self.session.allow("create"):
            return
        try:
            self.reload(self.session.create(name))
        except Exception as exc:  # noqa: BLE001 - a bad name or a folder problem: tell the operator
            self.session.error(exc)
        else:
            self.session.info(f"Product '{self.session.product}' created: choose its good images and train it.")

    def rename(self, new_name: str) -> None:
        if not self.session.allow("rename"):
            return
        try:
            self.reload(self.session.rename(new_name))
        except Exception as exc:  # noqa: BLE001
            self.session.error(exc)

    def delete(self) -> None:
        name = self.session.product
        if not self.session.allow("delete"):
            return
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

    def ask_engineer(self) -> EngineerDialog | None:
        """Open the PIN dialog (not blocking: the line runs on); None, said, when the accounts
        file cannot be read (it is never replaced behind the engineer's back)."""
        if self.dialog is None:
            try:
                self.dialog = EngineerDialog(self.session, self)
            except InspectorError as exc:
                self.session.error(exc)
                return None
            self.dialog.finished.connect(self._dialog_closed)
            self.dialog.open()
        return self.dialog

    def _dialog_closed(self) -> None:
        self.dialog = None

    def _unlock_clicked(self) -> None:
        if self.session.user.is_engineer:
            self.session.lock()
            self.session.info("Locked: operator level.")
        else:
            self.ask_engineer()

    def _show_state(self) -> None:
        session, model = self.session, self.session.model
        if self.combo.currentData() != session.product and self.combo.findData(session.product) >= 0:
            self.combo.blockSignals(True)  # the product a PLC selected: shown, not loaded again
            self.combo.setCurrentIndex(self.combo.findData(session.product))
            self.combo.blockSignals(False)
        engineer = session.user.is_engineer
        self.combo.setEnabled(not session.busy)
        self.buttons[0].setEnabled(engineer and not session.busy)
        for button in self.buttons[1:]:
            button.setEnabled(engineer and not session.busy and session.product is not None)
        for button in self.buttons:
            button.setToolTip("" if engineer else "Engineers only: unlock with the engineer PIN")
        self.level.setText(f"Engineer: {session.user.name}" if engineer else "Operator")
        self.level.setProperty("engineer", engineer)
        self.level.style().unpolish(self.level)
        self.level.style().polish(self.level)
        self.unlock.setText("Lock" if engineer else KINDS["engineer"].label)
        self.unlock.setIcon(icon("unlock" if engineer else "lock"))
        self.unlock.setToolTip("Back to the operator level" if engineer else
                               "Unlock the engineer level (train, tolerance, memory bank, products)")
        if session.product is None:
            self.state.setText("Create a product to start.")
        elif model is None:
            self.state.setText("Not trained yet: go to Train.")
        else:
            self.state.setText(f"Version {model.version} · threshold {model.threshold:.4g} · tolerance "
                               f"{model.settings.tolerance:g} · {model.counts.get('good_images')} good images")


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


class IdleLock(QObject):
    """Locks the engineer level after IDLE_LOCK_MS without a key press or a click."""

    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self.timer = QTimer(self, singleShot=True, interval=IDLE_LOCK_MS)
        self.timer.timeout.connect(self._idle)
        session.user_changed.connect(lambda: self.timer.start() if session.user.is_engineer else self.timer.stop())
        QApplication.instance().installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        if event.type() in (QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress) and self.timer.isActive():
            self.timer.start()
        return False

    def _idle(self) -> None:
        if self.session.user.is_engineer:
            self.session.lock()
            self.session.info("The engineer level was locked after 15 minutes without input.")


class MainWindow(QMainWindow):
    def __init__(self, models_dir: str | Path, db_path: str | Path, plant_url: str | None = None):
        super().__init__()
        self.setWindowTitle("Inspector")
        self.setMinimumSize(1000, 640)
        store = ResultStore(db_path)
        accounts = Accounts(accounts_path(Path(db_path).resolve().parent))
        self.session = session = Session(Path(models_dir), store, accounts)
        if plant_url:  # the log is shipped to the plant database while the window is open
            from ..plant import Shipper

            session.shipper = Shipper(store, plant_url,
                                      on_message=lambda level, text: session.message.emit(level, text)).start()
        self.idle_lock = IdleLock(session)
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
        self.split.setCollapsible(0, False)
        self.split.setSizes([660, 64])
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(6, 4, 6, 0)
        column.addWidget(self.products)
        column.addWidget(self.split, 1)
        self.setCentralWidget(central)
        session.message.connect(self._message)

        self._action(self, "Start / Stop the line", ["F5"], self.monitor.start_stop)
        self._action(self, "Quit", [QKeySequence.StandardKey.Quit], self.close)
        self._action(self, "Snap", ["F6"], self.monitor.snap)
        # Space only on the Monitor tab, so that elsewhere it still presses buttons
        self._action(self.monitor, "Snap", ["Space"], self.monitor.snap).setShortcutContext(
            Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self._restore()
        self.products.reload(settings().value("product"))
        self.products._show_state()
        try:
            first_start = not accounts.is_set_up()
        except InspectorError as exc:  # a damaged accounts file: said, and the station stays at operator level
            session.error(exc)
            first_start = False
        if first_start:  # the engineer sets a PIN
            QTimer.singleShot(0, self.products.ask_engineer)

    @staticmethod
    def _action(owner: QWidget, text: str, keys: list, slot) -> QAction:
        action = QAction(text, owner)
        action.setShortcuts(keys)
        action.triggered.connect(slot)
        owner.addAction(action)
        return action

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
        """Stop every worker (the line finishes and logs its current item), waiting a bounded
        time, then close. A worker stuck in a call that cannot be interrupted is left behind."""
        self._remember()
        left = Worker.stop_all()
        if left:
            log.warning("closing without waiting for %s", ", ".join(left))
        if self.session.shipper is not None:
            self.session.shipper.stop()
            self.session.shipper = None  # the Monitor's clock asks it no more
        self.session.store.close()
        super().closeEvent(event)
