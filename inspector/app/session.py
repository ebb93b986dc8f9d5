"""What the tabs share: the models folder, the result log, the selected product and its
model, who is at the station (operator, or engineer after the PIN), the current shift, and
one channel for messages to the operator (log panel + status bar)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from .. import services
from ..changes import KINDS, Changes, LineRunning
from ..core.model import Model
from ..core.training import GoodFeatures
from ..errors import InspectorError, describe
from ..store.results import ResultStore
from ..users import OPERATOR_USER, Accounts, User
from .worker import Worker


def settings() -> QSettings:
    """The application's remembered state (an INI file; tests point QSettings.setPath elsewhere)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Inspector", "Inspector")


def confirm_on_running_line(parent: QWidget, session: "Session", title: str, text: str,
                            always: bool = False) -> bool:
    """True when the line is stopped (unless `always`: a change that makes a new version on
    one click, such as a roll-back or a taught part, is asked first either way), or the
    engineer confirms the change (`text` says what changes)."""
    if not session.line_running and not always:
        return True
    running = ("The line is running. ", "\n\nThe line uses the change from its next part; it is recorded "
                                        "in History.") if session.line_running else ("", "\n\nIt is recorded in History.")
    answer = QMessageBox.question(parent, title, f"{running[0]}{text}{running[1]}")
    if answer != QMessageBox.StandardButton.Yes:
        session.info(f"{title}: not changed.")
        return False
    return True


class Session(QObject):
    changed = Signal()  # the product or its model changed
    busy_changed = Signal(bool)  # training or monitoring runs: the product cannot change
    message = Signal(str, str)  # level ("info", "warning", "error"), text
    user_changed = Signal()  # an engineer unlocked, or the station locked again

    def __init__(self, models_dir: Path, store: ResultStore, accounts: Accounts):
        super().__init__()
        self.models_dir = Path(models_dir)
        self.store = store
        self.accounts = accounts
        self.user: User = OPERATOR_USER
        self.product: str | None = None
        self.model: Model | None = None
        self.good: GoodFeatures | None = None  # features of the last training, kept to re-fit
        self._busy: set[str] = set()
        self.shipper = None  # ships the log to the plant database (inspector.plant.Shipper), when one is given
        self._shift = services.shift_start(store) or self.changes.new_shift()

    # ---- who is at the station, and the shift ---------------------------------------
    def unlock(self, pin: str) -> User:
        """The engineer, after the right PIN (AccessDenied otherwise)."""
        self.user = self.accounts.unlock(pin)
        self.user_changed.emit()
        return self.user

    def set_engineer(self, name: str, pin: str, old_pin: str | None = None) -> User:
        """Set the engineer's PIN (the station's first start, or a change); unlocks."""
        self.user = self.changes.set_engineer(name, pin, old_pin)
        self.user_changed.emit()
        return self.user

    def lock(self) -> None:
        if self.user.is_engineer:
            self.user = OPERATOR_USER
            self.user_changed.emit()

    @property
    def changes(self) -> Changes:
        """The owner of every change (inspector.changes), for the user at the station now."""
        return Changes(self.models_dir, self.store, self.user, self.accounts)

    def refusal(self, kind: str) -> str:
        """Why the current user may not make a change of `kind` (inspector.changes.KINDS); '' when they may."""
        try:
            self.changes.check(kind)
        except InspectorError as exc:
            return str(exc)
        return ""

    def may(self, kind: str) -> bool:
        return not self.refusal(kind)

    def allow(self, kind: str) -> bool:
        """Whether the current user may make a change of `kind`; says why not."""
        reason = self.refusal(kind)
        if reason:
            self.warn(reason)
        return not reason

    def locked_reason(self, kind: str, stopped_line: bool = False) -> str:
        """Why a change of `kind` cannot be made now, in words shown beside its control (a touch
        screen has no hover); '' when it can."""
        try:
            self.changes.check(kind)
        except LineRunning:
            pass
        except InspectorError:
            return f"Locked: only the engineer may {KINDS[kind].permission}. Unlock with “Engineer…” at the top right."
        else:
            if not (stopped_line and self.line_running):
                return ""
        where = "(Monitor tab)" if self.line_running else "(it runs in another window or command at this station)"
        return f"Stop the line {where} to {KINDS[kind].permission}."

    def shift_start(self) -> str:
        return self._shift

    def new_shift(self) -> str:
        self._shift = self.changes.new_shift()
        return self._shift

    # ---- messages and busy state ---------------------------------------------------
    def info(self, text: str) -> None:
        self.message.emit("info", text)

    def warn(self, text: str) -> None:
        self.message.emit("warning", text)

    def error(self, exc_or_text) -> None:
        self.message.emit("error", exc_or_text if isinstance(exc_or_text, str) else describe(exc_or_text))

    def set_busy(self, what: str, busy: bool) -> None:
        was = bool(self._busy)
        (self._busy.add if busy else self._busy.discard)(what)
        if bool(self._busy) != was:
            self.busy_changed.emit(bool(self._busy))

    @property
    def busy(self) -> bool:
        return bool(self._busy)

    @property
    def line_running(self) -> bool:
        return "monitoring" in self._busy

    # ---- products ------------------------------------------------------------------
    def products(self) -> list[dict]:
        """Metadata of every product; an untrained one carries an 'error'."""
        return services.products(self.models_dir)

    def select(self, product: str | None) -> None:
        """Make `product` current; its model loads in a worker."""
        self.product, self.model, self.good = product, None, None
        self.changed.emit()
        if product is None:
            return
        settings().setValue("product", product)
        worker = Worker(lambda job: services.load_model(self.models_dir, product))
        worker.returned.connect(lambda model: self.product == product and self.set_model(model))
        worker.errored.connect(lambda exc: self._load_failed(product, exc))
        worker.start()

    def _load_failed(self, product: str, exc: BaseException) -> None:
        if self.product == product and services.current_version(self.models_dir, product) is not None:
            self.error(exc)  # a damaged model; an untrained product is not an error

    def follow_line(self, model: Model) -> None:
        """The running line inspects `model` now (a PLC selected its product): it becomes the
        current product and model, the very object the line uses."""
        self.product, self.model, self.good = model.product, model, None
        settings().setValue("product", model.product)
        self.changed.emit()

    def set_model(self, model: Model, good: GoodFeatures | None = None) -> None:
        self.model, self.good = model, good
        self.changed.emit()

    def create(self, name: str) -> str:
        return self.changes.create_product(name)

    def rename(self, new_name: str) -> str:
        return self.changes.rename_product(self.product, new_name)

    def delete(self) -> None:
        self.changes.delete_product(self.product)
