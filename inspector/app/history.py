"""History tab: the result log as a table (a Qt model over ResultStore.query, loaded a page at
a time in workers), filters, the selected record's image with its heatmap, CSV export."""
from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QDateTime, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDateTimeEdit, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget)

from .. import services
from ..data.images import load_image
from ..drawing import heat_range
from ..errors import InspectorError
from ..store.results import VERDICTS, InspectionRecord
from .session import Session, describe
from .teaching import PartButtons
from .views import ResultView, display_map, icon, splitter
from .worker import Worker

PAGE = 200
VERDICT_COLOURS = {"OK": "#1f7a3a", "NG": "#c62828", "ERROR": "#b26a00"}


def local_time(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | None, digits: str = ".4g") -> str:
    return "" if value is None else format(value, digits)


COLUMNS = (  # title, text of a record
    ("Time", lambda r: local_time(r.time)),
    ("Product", lambda r: r.product),
    ("Verdict", lambda r: r.verdict),
    ("Score", lambda r: _number(r.score)),
    ("Threshold", lambda r: _number(r.threshold)),
    ("Latency", lambda r: "" if r.latency_ms is None else f"{r.latency_ms:.0f} ms"),
    ("Source", lambda r: r.source),
    ("Image", lambda r: ": ".join(filter(None, (Path(r.image_path or "").name, r.error)))),
)


class RecordTable(QAbstractTableModel):
    """The records of the log that match the filters, newest first; the view asks for more
    (`more_wanted`) when scrolled to the end."""
    more_wanted = Signal()

    def __init__(self):
        super().__init__()
        self.records: list[InspectionRecord] = []
        self.total = 0
        self.loading = False

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        record = self.records[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[index.column()][1](record)
        if role == Qt.ItemDataRole.ForegroundRole and COLUMNS[index.column()][0] == "Verdict":
            return QColor(VERDICT_COLOURS[record.verdict])
        if role == Qt.ItemDataRole.ToolTipRole:
            return "\n".join(filter(None, (record.image_path, record.error)))
        return None

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and not self.loading and len(self.records) < self.total

    def fetchMore(self, parent=QModelIndex()) -> None:
        self.loading = True
        self.more_wanted.emit()

    def reset(self, records: list[InspectionRecord], total: int) -> None:
        self.beginResetModel()
        self.records, self.total, self.loading = list(records), total, False
        self.endResetModel()

    def extend(self, records: list[InspectionRecord]) -> None:
        self.loading = False
        if records:
            start = len(self.records)
            self.beginInsertRows(QModelIndex(), start, start + len(records) - 1)
            self.records += records
            self.endInsertRows()


def _first_page(job: Worker, session: Session, filters: dict) -> tuple:
    """The first page of records, how many match, and every product name (for the filter)."""
    store = session.store
    products = {meta["product"] for meta in session.products()} | set(store.products())
    return store.query(**filters, limit=PAGE), store.count(**filters), sorted(products)


def _look(job: Worker, record: InspectionRecord, session: Session, extractors: dict) -> tuple:
    """The record's image re-inspected with the product's model; with the logged boxes when
    the model is not available; nothing but the record when the image is gone."""
    path = services.find_image(record)
    if path is None:
        if record.source == "camera":
            return None, None, 1.0, [], "Camera frames are not kept (archive the overlays to keep them)."
        return None, None, 1.0, [], "The image file is no longer there: only the logged record is shown."
    logged = [(r["x"], r["y"], r["w"], r["h"]) for r in record.regions]
    model = session.model if session.model is not None and session.model.product == record.product else None
    try:
        image, result, model = services.reinspect(session.models_dir, record.product, path, model,
                                                  extractors=extractors)
    except InspectorError as exc:  # an unreadable image raises again here: shown as the error
        return (load_image(path), None, 1.0, logged,
                f"The logged boxes are shown; it cannot be inspected again: {exc}")
    boxes = [(r.x, r.y, r.w, r.h) for r in result.regions]
    return (image, display_map(result.anomaly_map), heat_range(result.threshold)[1], boxes,
            f"Inspected again now with the current model (version {model.version}): {result.verdict}, "
            f"score {result.score:.4g}.")


class HistoryTab(QWidget):
    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self.table = RecordTable()
        self.table.more_wanted.connect(self._load_more)
        self._filters: dict = {}
        self._query = 0  # number of the newest query: older answers are dropped
        self._looked_at: int | None = None
        self._extractors: dict = {}

        self.product = QComboBox()
        self.product.setMinimumWidth(160)
        self.verdict = QComboBox()
        self.verdict.addItem("All verdicts", None)
        for verdict in VERDICTS:
            self.verdict.addItem(verdict, verdict)
        self.since_on, self.since = QCheckBox("From"), QDateTimeEdit(QDateTime.currentDateTime().addDays(-1))
        self.until_on, self.until = QCheckBox("To"), QDateTimeEdit(QDateTime.currentDateTime())
        for check, edit in ((self.since_on, self.since), (self.until_on, self.until)):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setEnabled(False)
            check.toggled.connect(edit.setEnabled)
            check.toggled.connect(self.refresh)
            edit.dateTimeChanged.connect(lambda _, c=check: c.isChecked() and self.refresh())
        self.product.currentIndexChanged.connect(self.refresh)
        self.verdict.currentIndexChanged.connect(self.refresh)
        refresh = QPushButton(icon("refresh"), "Refresh")
        refresh.clicked.connect(self.refresh)
        export = QPushButton(icon("export"), "Export CSV…")
        export.clicked.connect(self._export_clicked)
        self.total = QLabel()

        filters = QHBoxLayout()
        for widget in (QLabel("Product"), self.product, self.verdict, self.since_on, self.since,
                       self.until_on, self.until, refresh):
            filters.addWidget(widget)
        filters.addStretch(1)
        filters.addWidget(self.total)
        filters.addWidget(export)

        self.view_table = QTableView()
        self.view_table.setModel(self.table)
        self.view_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view_table.setAlternatingRowColors(True)
        self.view_table.verticalHeader().hide()
        self.view_table.verticalHeader().setDefaultSectionSize(24)
        header = self.view_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for column, width in enumerate((150, 120, 70, 70, 85, 90, 70)):
            header.resizeSection(column, width)
        self.view_table.selectionModel().currentRowChanged.connect(lambda index, _: self.look_at(index.row()))

        self.image = ResultView()
        self.details = QLabel("Select a row to see its image.")
        self.details.setWordWrap(True)
        self.details.setObjectName("details")
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.image, 1)
        column.addWidget(self.details)
        self.part_buttons = PartButtons(session)
        column.addWidget(self.part_buttons)

        split = splitter("history_split", self.view_table, right, (840, 440), (3, 2))
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(split, 1)
        self.product.addItem("All products", None)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()

    def _fill_products(self, names: list[str]) -> None:
        current = self.product.currentData()
        self.product.blockSignals(True)
        self.product.clear()
        self.product.addItem("All products", None)
        for name in names:
            self.product.addItem(name, name)
        self.product.setCurrentIndex(max(0, self.product.findData(current)))
        self.product.blockSignals(False)

    # ---- the table ------------------------------------------------------------------------
    def filters(self) -> dict:
        """The filters as ResultStore.query takes them; `until` is pinned to now so that the
        pages stay in step while new verdicts are logged."""
        until = self.until.dateTime().toPython() if self.until_on.isChecked() else datetime.now(timezone.utc)
        return {"product": self.product.currentData(), "verdict": self.verdict.currentData(),
                "since": self.since.dateTime().toPython() if self.since_on.isChecked() else None,
                "until": until}

    def refresh(self) -> None:
        self._filters = self.filters()
        self._query += 1
        number = self._query
        worker = Worker(_first_page, self.session, self._filters)
        worker.returned.connect(lambda answer: number == self._query and self._loaded(*answer))
        worker.errored.connect(self.session.error)
        worker.start()

    def _loaded(self, records: list[InspectionRecord], total: int, products: list[str]) -> None:
        self._fill_products(products)
        self.table.reset(records, total)
        self._show_total()
        self.image.display(None)
        self.details.setText("Select a row to see its image.")
        self.part_buttons.set_record(None)
        self._looked_at = None

    def _load_more(self) -> None:
        number, store, filters, offset = self._query, self.session.store, self._filters, len(self.table.records)
        worker = Worker(lambda job: store.query(**filters, limit=PAGE, offset=offset))
        worker.returned.connect(lambda records: number == self._query and self._more_loaded(records))
        worker.errored.connect(self.session.error)
        worker.start()

    def _more_loaded(self, records: list[InspectionRecord]) -> None:
        self.table.extend(records)
        self._show_total()

    def _show_total(self) -> None:
        shown, total = len(self.table.records), self.table.total
        self.total.setText(f"{total} inspection(s)" + (f", {shown} loaded" if shown < total else ""))

    # ---- the selected record ------------------------------------------------------------------
    def look_at(self, row: int) -> None:
        if not 0 <= row < len(self.table.records):
            return
        record = self.table.records[row]
        self._looked_at = record.id
        self.part_buttons.set_record(record)
        self.details.setText(self._describe(record))
        self.image.display(None, caption="Loading…")
        worker = Worker(_look, record, self.session, self._extractors)
        worker.returned.connect(lambda shown: self._looked_at == record.id and self._show(record, *shown))
        worker.errored.connect(lambda exc: self._looked_at == record.id and self._show(record, None, None, 1.0,
                                                                                        [], describe(exc)))
        worker.start()

    def _show(self, record: InspectionRecord, image, heat, level, boxes, note: str) -> None:
        self.image.display(image, heat, level, boxes, Path(record.image_path or "").name)
        self.details.setText(self._describe(record) + "<br>" + html.escape(note))

    @staticmethod
    def _describe(record: InspectionRecord) -> str:
        lines = [f"<b>{record.verdict}</b> · {local_time(record.time)} · {record.product} · {record.source}"]
        if record.score is not None:
            lines.append(f"Score {record.score:.4g}, threshold {record.threshold:.4g}, "
                         f"{_number(record.latency_ms, '.0f')} ms, {len(record.regions)} region(s), "
                         f"model {record.model_id}")
        if record.error:
            lines.append(f"Reason: {record.error}")
        if record.image_path:
            lines.append(record.image_path)
        return "<br>".join(html.escape(line) if i else line for i, line in enumerate(lines))

    # ---- export -------------------------------------------------------------------------------
    def _export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the history as CSV", "inspections.csv",
                                              "CSV files (*.csv)")
        if path:
            self.export(path)

    def export(self, path: str) -> Worker:
        store, filters = self.session.store, self.filters()
        worker = Worker(lambda job: store.export_csv(path, **filters))
        worker.returned.connect(lambda rows: self.session.info(f"{rows} inspection(s) exported to {path}."))
        worker.errored.connect(self.session.error)
        return worker.start()
