"""History tab: the result log as a table (a Qt model over ResultStore.query, loaded a page at
a time in workers), filters, the selected record's image with its heatmap, CSV export."""
from __future__ import annotations

import html
from datetime import datetime, timezone

from PySide6.QtCore import QAbstractTableModel, QDateTime, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDateTimeEdit, QFileDialog, QHBoxLayout,
                               QHeaderView, QLabel, QPushButton, QStackedWidget, QTableView, QVBoxLayout, QWidget)

from .. import services
from ..data.images import load_image
from ..drawing import heat_range
from ..errors import InspectorError
from ..frames import part_name
from ..store.results import STATION, VERDICTS, Event, InspectionRecord
from .session import Session, describe
from .teaching import PartButtons
from .views import ResultView, display_image, display_map, icon, local_time, splitter
from .worker import Worker

PAGE = 200
EVENTS_SHOWN = 2000
CHANGES = {"create": "product created", "train": "trained", "tolerance": "tolerance changed",
           "sensitivity": "tolerance changed",  # the tolerance's older name, in older logs
           "bank": "memory bank rebuilt", "rename": "renamed", "delete": "product deleted",
           "shift": "new shift", "engineer": "engineer PIN"}
VERDICT_COLOURS = {"OK": "#1f7a3a", "NG": "#c62828", "ERROR": "#b26a00"}


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
    ("Image", lambda r: ": ".join(filter(None, (part_name(r.image_path) if r.image_path else "", r.error)))),
)


EVENT_COLUMNS = (  # title, text of an event
    ("Time", lambda e: local_time(e.time)),
    ("Product", lambda e: "(station)" if e.product == STATION else e.product),
    ("Change", lambda e: CHANGES.get(e.kind, e.kind)),
    ("Who", lambda e: e.user),
    ("From", lambda e: local_time(e.old) if e.kind == "shift" and e.old else e.old or ""),
    ("To", lambda e: local_time(e.new) if e.kind == "shift" and e.new else e.new or ""),
)


class RowTable(QAbstractTableModel):
    """Rows of plain data under `columns` (title, text of a row); `tip` gives a row's tooltip."""
    columns: tuple = ()

    def __init__(self):
        super().__init__()
        self.rows: list = []

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section][0]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[index.column()][1](row)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tip(row)
        if role == Qt.ItemDataRole.ForegroundRole and self.columns[index.column()][0] == "Verdict":
            return QColor(VERDICT_COLOURS[row.verdict])
        return None

    def tip(self, row) -> str:
        return ""

    def set_rows(self, rows: list) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()


class EventTable(RowTable):
    """The recorded changes (who, when, old -> new) that match the filters, newest first."""
    columns = EVENT_COLUMNS

    @property
    def events(self) -> list[Event]:
        return self.rows

    def tip(self, event: Event) -> str:
        return "\n".join(filter(None, (f"From: {event.old or '–'}", f"To: {event.new or '–'}", event.detail)))


class RecordTable(RowTable):
    """The records of the log that match the filters, newest first; the view asks for more
    (`more_wanted`) when scrolled to the end."""
    columns = COLUMNS
    more_wanted = Signal()

    def __init__(self):
        super().__init__()
        self.total = 0
        self.loading = False

    @property
    def records(self) -> list[InspectionRecord]:
        return self.rows

    def tip(self, record: InspectionRecord) -> str:
        return "\n".join(filter(None, (record.image_path, record.error)))

    def canFetchMore(self, parent=QModelIndex()) -> bool:
        return not parent.isValid() and not self.loading and len(self.records) < self.total

    def fetchMore(self, parent=QModelIndex()) -> None:
        self.loading = True
        self.more_wanted.emit()

    def reset(self, records: list[InspectionRecord], total: int) -> None:
        self.total, self.loading = total, False
        self.set_rows(records)

    def extend(self, records: list[InspectionRecord]) -> None:
        self.loading = False
        if records:
            start = len(self.records)
            self.beginInsertRows(QModelIndex(), start, start + len(records) - 1)
            self.rows += records
            self.endInsertRows()


def _first_page(job: Worker, session: Session, filters: dict) -> tuple:
    """The first page of records, how many match, and every product name (for the filter)."""
    store = session.store
    products = {meta["product"] for meta in session.products()} | set(store.products())
    return store.query(**filters, limit=PAGE), store.count(**filters), sorted(products)


def look(job: Worker, record: InspectionRecord, session: Session, extractors: dict) -> tuple:
    """The record's image re-inspected with the product's model (image, bank's map, its level, boxes, note and,
    with defect heads, the classifier's map); with the logged boxes when the model is not available; nothing but
    the record when the image is gone."""
    path = services.find_image(record)
    if path is None:
        if record.source == "camera":
            return None, None, 1.0, [], ("This camera frame was not kept (only NG frames are kept, the "
                                         "oldest dropped first) or it was deleted."), None
        return None, None, 1.0, [], "The image file is no longer there: only the logged record is shown.", None
    logged = [(r["x"], r["y"], r["w"], r["h"]) for r in record.regions]
    model = session.model if session.model is not None and session.model.product == record.product else None
    try:
        image, result, model = services.reinspect(session.models_dir, record.product, path, model,
                                                  extractors=extractors)
    except InspectorError as exc:  # an unreadable image raises again here: shown as the error
        image, logged = display_image(load_image(path), logged)
        return image, None, 1.0, logged, f"The logged boxes are shown; it cannot be inspected again: {exc}", None
    image, boxes = display_image(image, [(r.x, r.y, r.w, r.h) for r in result.regions])
    findings = services.findings_text(result, model)  # of defect heads, of regions accepted for their size
    return (image, display_map(result.anomaly_map), heat_range(result.threshold)[1], boxes,
            f"Inspected again now with the current model (version {model.version}): {result.verdict}, "
            f"score {result.score:.4g}." + (f"\n{findings}" if findings else ""),
            display_map(result.activation_map))


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
        self.changes = EventTable()

        self.show_what = QComboBox()
        self.show_what.addItem("Inspections", "inspections")
        self.show_what.addItem("Changes (who, when, old → new)", "changes")
        self.show_what.currentIndexChanged.connect(self._mode_changed)

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
        self.export_button = export

        filters = QHBoxLayout()
        for widget in (self.show_what, QLabel("Product"), self.product, self.verdict, self.since_on, self.since,
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
        session.changed.connect(self._model_changed)

        self.image = ResultView()
        self.details = QLabel("Select a row to see its image.")
        self.details.setWordWrap(True)
        self.details.setObjectName("details")
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.image, 1)
        column.addWidget(self.image.choice, 0, Qt.AlignmentFlag.AlignLeft)
        column.addWidget(self.details)
        self.part_buttons = PartButtons(session)
        column.addWidget(self.part_buttons)

        split = splitter("history_split", self.view_table, right, (840, 440), (3, 2))
        self.changes_table = QTableView()
        self.changes_table.setModel(self.changes)
        self.changes_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.changes_table.setAlternatingRowColors(True)
        self.changes_table.setWordWrap(True)
        self.changes_table.verticalHeader().hide()
        header = self.changes_table.horizontalHeader()
        header.setStretchLastSection(True)
        for column, width in enumerate((150, 120, 150, 150, 420)):
            header.resizeSection(column, width)
        self.pages = QStackedWidget()
        self.pages.addWidget(split)
        self.pages.addWidget(self.changes_table)
        layout = QVBoxLayout(self)
        layout.addLayout(filters)
        layout.addWidget(self.pages, 1)
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

    def _mode_changed(self) -> None:
        changes = self.show_what.currentData() == "changes"
        self.pages.setCurrentIndex(1 if changes else 0)
        self.verdict.setVisible(not changes)
        self.export_button.setEnabled(not changes)
        self.refresh()

    def refresh(self) -> None:
        self._filters = self.filters()
        self._query += 1
        number = self._query
        if self.show_what.currentData() == "changes":
            filters = {k: v for k, v in self._filters.items() if k != "verdict"}
            store = self.session.store
            worker = Worker(lambda job: store.events(**filters, limit=EVENTS_SHOWN))
            worker.returned.connect(lambda events: number == self._query and self._changes_loaded(events))
            worker.errored.connect(self.session.error)
            worker.start()
            return
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

    def _changes_loaded(self, events: list[Event]) -> None:
        self.changes.set_rows(events)
        self.changes_table.resizeRowsToContents()
        self.total.setText(f"{len(events)} change(s)" + (" (the newest)" if len(events) == EVENTS_SHOWN else ""))

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
        self.part_buttons.set_record(record)
        self._inspect_again(record)

    def _model_changed(self) -> None:
        """A new model of the part's product (taught, a new tolerance…): the part on screen is
        inspected again with it, as its note says."""
        record = next((r for r in self.table.records if r.id == self._looked_at), None)
        model = self.session.model
        if record is not None and model is not None and model.product == record.product:
            self._inspect_again(record)

    def _inspect_again(self, record: InspectionRecord) -> None:
        self._looked_at = record.id
        self.details.setText(self._describe(record))
        self.image.display(None, caption="Loading…")
        worker = Worker(look, record, self.session, self._extractors)
        worker.returned.connect(lambda shown: self._looked_at == record.id and self._show(record, *shown))
        worker.errored.connect(lambda exc: self._looked_at == record.id and self._show(record, None, None, 1.0,
                                                                                        [], describe(exc), None))
        worker.start()

    def _show(self, record: InspectionRecord, image, heat, level, boxes, note: str, activation) -> None:
        self.image.display(image, heat, level, boxes, part_name(record.image_path) if record.image_path else "",
                           activation=activation)
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
