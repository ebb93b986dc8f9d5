"""What the tabs share: the models folder, the result log, the selected product and its
model, and one channel for messages to the operator (log panel + status bar)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal

from .. import services
from ..core.model import Model, current_version, load_model
from ..core.training import GoodFeatures
from ..errors import describe  # noqa: F401 - the tabs' name for it
from ..store.results import ResultStore
from .worker import Worker


def settings() -> QSettings:
    """The application's remembered state (an INI file; tests point QSettings.setPath elsewhere)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "Inspector", "Inspector")


class Session(QObject):
    changed = Signal()  # the product or its model changed
    busy_changed = Signal(bool)  # training or monitoring runs: the product cannot change
    message = Signal(str, str)  # level ("info", "warning", "error"), text

    def __init__(self, models_dir: Path, store: ResultStore):
        super().__init__()
        self.models_dir = Path(models_dir)
        self.store = store
        self.product: str | None = None
        self.model: Model | None = None
        self.good: GoodFeatures | None = None  # features of the last training, kept to re-fit
        self._busy: set[str] = set()

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
        worker = Worker(lambda job: load_model(self.models_dir, product))
        worker.returned.connect(lambda model: self.product == product and self.set_model(model))
        worker.errored.connect(lambda exc: self._load_failed(product, exc))
        worker.start()

    def _load_failed(self, product: str, exc: BaseException) -> None:
        if self.product == product and current_version(self.models_dir, product) is not None:
            self.error(exc)  # a damaged model; an untrained product is not an error

    def set_model(self, model: Model, good: GoodFeatures | None = None) -> None:
        self.model, self.good = model, good
        self.changed.emit()

    def create(self, name: str) -> str:
        return services.create_product(self.models_dir, self.store, name)

    def rename(self, new_name: str) -> str:
        return services.rename_product(self.models_dir, self.store, self.product, new_name)

    def delete(self) -> None:
        services.delete_product(self.models_dir, self.store, self.product)
