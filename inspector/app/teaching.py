"""Teaching a running station from the screen: the inspection region drawn on a good image,
'this part is good' / 'this part is a defect' for a part of the History or the Monitor, and
the model's versions with roll-back. It paints and asks inspector.services, nothing more."""
from __future__ import annotations


import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPen, QPolygonF
from PySide6.QtWidgets import (QButtonGroup, QFileDialog, QGraphicsPolygonItem, QGroupBox, QHBoxLayout, QLabel,
                               QPushButton, QRadioButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from .. import services
from ..changes import KINDS, Taught
from ..core.roi import Shape, describe_roi, roi_from_shapes
from ..data.images import load_image
from ..errors import TrainingError
from ..frames import part_name
from ..store.results import InspectionRecord
from .session import Session, confirm_on_running_line
from .views import display_image, icon, local_time, lock_note, show_lock, splitter
from .worker import Worker

INCLUDE_COLOUR, EXCLUDE_COLOUR, REGION_COLOUR = QColor("#2e9e4f"), QColor("#d83a3a"), QColor(46, 158, 79, 60)
TOOLS = ("Include rectangle", "Exclude rectangle", "Include polygon", "Exclude polygon")


def _percent(rate: float) -> str:
    return f"{100.0 * rate:.1f} %"


def taught_summary(taught: Taught) -> str:
    """What teaching changed, in the operator's words: the new threshold and how the expected
    false-reject rate moved."""
    before, after = taught.false_reject_rates()
    scores = ", ".join(f"{p.name} {a:.3g} → {b:.3g}" for p, a, b in
                       zip(taught.paths, taught.scores_before, taught.scores_after))
    return (f"'{taught.model.product}' version {taught.model.version}: {taught.model.change}. Threshold "
            f"{taught.before.threshold:.4g} → {taught.model.threshold:.4g}; expected false rejects "
            f"{_percent(before)} → {_percent(after)}. Score {scores}.")


def teach_part(session: Session, record: InspectionRecord, good: bool) -> Worker:
    """'This part is good' (it joins the model: a new version) or 'this part is a defect' (it
    joins the product's known defects) for a logged part whose image file is still there, off
    the GUI thread; the outcome goes to the messages."""
    product, changes = record.product, session.changes

    def work(job: Worker):
        path = services.find_image(record)
        if path is None:
            raise TrainingError(f"The image of this part ({record.image_path or 'a camera frame'}) is no longer "
                                f"there: it cannot be taught.")
        if good:
            return changes.teach(product, [path])
        return changes.add_known_defects(product, [path])

    def done(result) -> None:
        if not good:
            session.info(f"{result[0].name} is now a known defect of '{product}' (Calibrate scores it).")
            return
        session.info(f"{taught_summary(result)} Kept in {services.taught_dir(session.models_dir, product)}: every "
                     f"later training and rebuild of the memory bank uses it.")
        if session.product == product:
            session.set_model(result.model, session.good)

    worker = Worker(work)
    worker.returned.connect(done)
    worker.errored.connect(session.error)
    return worker.start()


class PartButtons(QWidget):
    """'This part is good' and 'This part is a defect' for the logged part on screen (History,
    Monitor); enabled for an OK or NG part with an image file."""

    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self.record: InspectionRecord | None = None
        self.good = QPushButton(icon("check"), KINDS["teach"].label)
        self.good.setToolTip("Teach it: its patches join the memory bank and its score the calibration "
                             "(a new model version; the good images are not read again)")
        self.defect = QPushButton(KINDS["defect"].label)
        self.defect.setToolTip("Add it to the product's known defects, which Calibrate scores")
        self.good.clicked.connect(lambda: self.teach(True))
        self.defect.clicked.connect(lambda: self.teach(False))
        session.user_changed.connect(lambda: self.set_record(self.record))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.good)
        row.addWidget(self.defect)
        row.addStretch(1)
        self.set_record(None)

    def set_record(self, record: InspectionRecord | None) -> None:
        usable = record is not None and record.verdict in ("OK", "NG") and bool(record.image_path)
        self.record = record if usable else None
        engineer = self.session.may("teach")
        self.good.setEnabled(usable and engineer)  # it changes the model
        self.good.setText(KINDS["teach"].label + ("" if engineer else " (engineer only)"))
        self.defect.setEnabled(usable)  # a known defect only feeds Calibrate: an operator may confirm one

    def teach(self, good: bool) -> Worker | None:
        record = self.record
        if record is None or (good and not self.session.allow("teach")):
            return None
        model = self.session.model if self.session.product == record.product else None
        now = (f" (now version {model.version}, threshold {model.threshold:.4g}; this part scored "
               f"{record.score:.4g})" if model is not None and record.score is not None else "")
        if good and not confirm_on_running_line(
                self, self.session, "Teach a good part",
                f"Teach {part_name(record.image_path)} as a good part of '{record.product}'?\n\nIt makes a new model "
                f"version{now}: the part's patches join the memory bank and its score the calibration, so the "
                f"threshold is recalculated. The threshold and the expected false-reject rate before and after are "
                f"shown once it is done; Roll back undoes it.", always=True):
            return None
        self.set_record(None)  # once per part
        return teach_part(self.session, record, good)


class _DrawingBox(pg.ViewBox):
    """A view box that draws shapes with the mouse: a rectangle by dragging, a polygon by
    clicking its corners and double-clicking (or clicking the first corner) to close it."""
    drawn = Signal(object)  # Shape

    def __init__(self):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.tool = TOOLS[0]
        self._points: list[tuple[float, float]] = []
        self._sketch = QGraphicsPolygonItem()
        self._sketch.setZValue(5)
        self.addItem(self._sketch)

    def _include(self) -> bool:
        return self.tool.startswith("Include")

    def _paint_sketch(self, points) -> None:
        self._sketch.setPen(QPen(INCLUDE_COLOUR if self._include() else EXCLUDE_COLOUR, 0))
        self._sketch.setPolygon(QPolygonF([QPointF(x, y) for x, y in points]))

    def mouseDragEvent(self, ev, axis=None) -> None:
        if not self.tool.endswith("rectangle") or ev.button() != Qt.MouseButton.LeftButton:
            return super().mouseDragEvent(ev, axis)
        ev.accept()
        a, b = self.mapSceneToView(ev.buttonDownScenePos()), self.mapSceneToView(ev.scenePos())
        corners = [(a.x(), a.y()), (b.x(), a.y()), (b.x(), b.y()), (a.x(), b.y())]
        self._paint_sketch(corners)
        if ev.isFinish():
            self._paint_sketch([])
            self.drawn.emit(Shape(((a.x(), a.y()), (b.x(), b.y())), self._include(), "rectangle"))

    def mouseClickEvent(self, ev) -> None:
        if not self.tool.endswith("polygon") or ev.button() != Qt.MouseButton.LeftButton:
            return super().mouseClickEvent(ev)
        ev.accept()
        p = self.mapSceneToView(ev.scenePos())
        close = ev.double() or (len(self._points) >= 3 and np.hypot(*np.subtract(self._points[0], (p.x(), p.y())))
                                < 0.02 * max(1.0, self.viewRect().width()))
        if close and len(self._points) >= 3:
            self.drawn.emit(Shape(tuple(self._points), self._include(), "polygon"))
            self._points = []
        elif not ev.double():
            self._points.append((p.x(), p.y()))
        self._paint_sketch(self._points)

    def cancel_polygon(self) -> None:
        self._points = []
        self._paint_sketch([])


class RegionEditor(QWidget):
    """Draw include and exclude areas on a good image of the product, see the region they make
    over the image, and save it as the model's new version (no good image is read again)."""

    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self.shapes: list[Shape] = []
        self.image: np.ndarray | None = None
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("#1b1d21")
        self.box = _DrawingBox()
        self.view.addItem(self.box)
        self.picture = pg.ImageItem(axisOrder="row-major")
        self.region = pg.ImageItem(axisOrder="row-major")
        self.region.setZValue(1)
        self.box.addItem(self.picture)
        self.box.addItem(self.region)
        self._items: list[QGraphicsPolygonItem] = []
        self.box.drawn.connect(self.add_shape)

        self.open = QPushButton(icon("folder"), "Open a good image…")
        self.open.clicked.connect(self._choose_image)
        self.tools = QButtonGroup(self)
        tool_row = QHBoxLayout()
        for i, name in enumerate(TOOLS):
            button = QRadioButton(name)
            button.setChecked(i == 0)
            self.tools.addButton(button, i)
            tool_row.addWidget(button)
        self.tools.idClicked.connect(self._set_tool)
        self.undo = QPushButton("Undo last area")
        self.undo.clicked.connect(self.undo_shape)
        self.clear = QPushButton("Whole image")
        self.clear.setToolTip("Remove every area: inspect the whole image")
        self.clear.clicked.connect(self.clear_shapes)
        self.save = QPushButton(icon("check"), KINDS["region"].label)
        self.save.setObjectName("primary")
        self.save.clicked.connect(self.save_region)
        self.status = QLabel("Open a good image of the product, then draw where to inspect.")
        self.status.setWordWrap(True)
        self.locked = lock_note()

        buttons = QHBoxLayout()
        for w in (self.open, self.undo, self.clear, self.save):
            buttons.addWidget(w)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(tool_row)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.locked)
        session.changed.connect(self.refresh)
        session.user_changed.connect(self.refresh)
        self.refresh()

    # ---- what is shown ----------------------------------------------------------------
    def refresh(self) -> None:
        model = self.session.model
        self.save.setEnabled(model is not None and self.image is not None and self.session.may("region"))
        show_lock(self.locked, self.session.locked_reason("region") if model else "")
        self._say_region()
        if self.image is not None and not self.shapes:
            self._paint_region(None if model is None else model.roi)

    def _say_region(self) -> None:
        """What the model inspects, and what is drawn but not saved yet."""
        model = self.session.model
        if model is None:
            self.status.setText("Train the product first.")
            return
        text = f"The model inspects {describe_roi(model.roi)}."
        if self.shapes:
            roi = self.current_roi()
            drawn = "nothing (every area is excluded)" if roi is not None and not roi.any() else describe_roi(roi)
            text = (f"Drawn, not saved: {len(self.shapes)} area(s), inspecting {drawn}. Save region to use it; "
                    f"until then {text[0].lower()}{text[1:]}")
        self.status.setText(text)

    def set_image(self, image: np.ndarray) -> None:
        self.image = image
        self.picture.setImage(image, autoLevels=False, levels=(0, 255))
        self.box.autoRange(padding=0.01)
        self.refresh()

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a good image of the product", "",
                                              "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if path:
            self.open_image(path)

    def open_image(self, path) -> Worker:
        """Read (and make small enough to paint) a good image off the GUI thread, then show it."""
        worker = Worker(lambda job: display_image(load_image(path))[0])
        worker.returned.connect(self.set_image)
        worker.errored.connect(self.session.error)
        return worker.start()

    def _set_tool(self, index: int) -> None:
        self.box.cancel_polygon()
        self.box.tool = TOOLS[index]

    def _paint_region(self, roi: np.ndarray | None) -> None:
        """The region green over the image (nothing when it is the whole image)."""
        if self.image is None or roi is None:
            self.region.clear()
            return
        h, w = self.image.shape[:2]
        rgba = np.zeros(roi.shape + (4,), np.uint8)
        rgba[roi] = REGION_COLOUR.getRgb()
        self.region.setImage(rgba, autoLevels=False, levels=(0, 255))
        self.region.setRect(0, 0, w, h)

    def current_roi(self) -> np.ndarray | None:
        model = self.session.model
        if model is None or self.image is None:
            return None
        h, w = self.image.shape[:2]
        return roi_from_shapes(self.shapes, (w, h))

    # ---- editing ------------------------------------------------------------------------
    def add_shape(self, shape: Shape) -> None:
        self.shapes.append(shape)
        item = QGraphicsPolygonItem(QPolygonF([QPointF(x, y) for x, y in shape.polygon()]))
        item.setPen(QPen(INCLUDE_COLOUR if shape.include else EXCLUDE_COLOUR, 0))
        item.setZValue(2)
        self.box.addItem(item)
        self._items.append(item)
        self._paint_region(self.current_roi())
        self._say_region()

    def undo_shape(self) -> None:
        if self.shapes:
            self.shapes.pop()
            self.box.removeItem(self._items.pop())
            self._paint_region(self.current_roi())
            self._say_region()

    def clear_shapes(self) -> None:
        while self.shapes:
            self.undo_shape()

    def save_region(self) -> None:
        model = self.session.model
        if model is None or not self.session.allow("region"):
            return
        if not confirm_on_running_line(self, self.session, "Inspection region",
                                       f"Saving the region makes a new model version of '{model.product}', "
                                       f"recalibrated: its threshold and expected false-reject rate are shown "
                                       f"once it is saved."):
            return
        roi = self.current_roi()
        product = self.session.product

        def saved(new) -> None:
            self.session.info(f"'{product}' version {new.version}: {new.change}. Threshold {model.threshold:.4g} → "
                              f"{new.threshold:.4g}; expected false rejects "
                              f"{_percent(model.calibration.false_reject_rate(model.threshold))} → "
                              f"{_percent(new.calibration.false_reject_rate(new.threshold))}.")
            self.clear_shapes()
            if self.session.product == product:
                self.session.set_model(new, self.session.good)

        changes = self.session.changes
        worker = Worker(lambda job: changes.set_region(product, roi))
        worker.returned.connect(saved)
        worker.errored.connect(self.session.error)
        self._saver = worker.start()


def rollback_text(models_dir, current, version: int) -> str:
    """What rolling back to `version` changes, as the confirmation says it."""
    try:
        old = services.load_model(models_dir, current.product, version=version)
    except Exception as exc:  # noqa: BLE001 - said in the question; the roll-back itself says it again
        return f"Make version {version} the model of '{current.product}' again? ({exc})"
    before = services.rates(current, current.threshold)
    after = services.rates(old, old.threshold)
    return (f"Make version {version} the model of '{current.product}' again?\n\nIt is saved as version "
            f"{current.version + 1} (now {current.version}; the versions between stay):\n"
            f"threshold {current.threshold:.4g} → {old.threshold:.4g}, tolerance {current.settings.tolerance:g} → "
            f"{old.settings.tolerance:g}\nexpected false rejects {before.false_rejects_text()} → "
            f"{after.false_rejects_text()}\nmemory bank {len(current.memory_bank)} → {len(old.memory_bank)} patch "
            f"features; inspecting {describe_roi(current.roi)} → {describe_roi(old.roi)}")


class VersionsPanel(QWidget):
    """The kept versions of the product's model, newest first, with what changed in each; an
    earlier one can be made the model again (saved as a new version), and one this station
    refuses (unsigned: older, from another station, edited) can be signed by an engineer who
    has checked it (services.resign: saved as a new version, recorded as an event)."""
    COLUMNS = ("Version", "Created", "Threshold", "Bank", "Change")

    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()  # row numbers beside version numbers only confuse
        self.table.horizontalHeaderItem(3).setToolTip("Patch features in the memory bank")
        self.change = QLabel()  # what changed in the selected version, whole (the column is cut short)
        self.change.setWordWrap(True)
        self.change.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rollback = QPushButton(icon("refresh"), KINDS["rollback"].label)
        self.rollback.clicked.connect(lambda: self.roll_back())  # not clicked(checked=False) as `confirm`
        self.resign = QPushButton(icon("refresh"), KINDS["resign"].label)
        self.resign.setToolTip("A version this station refuses as unsigned (an older Inspector's, another "
                               "station's, or edited): sign it, once you have checked it, as the next version")
        self.resign.clicked.connect(lambda: self.sign())
        self._rows: list[dict] = []
        self.table.itemSelectionChanged.connect(self._selection_changed)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        self.locked = lock_note()
        layout.addWidget(self.change)
        buttons = QHBoxLayout()
        buttons.addWidget(self.rollback)
        buttons.addWidget(self.resign)
        layout.addLayout(buttons)
        layout.addWidget(self.locked)
        session.changed.connect(self.refresh)
        session.user_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        product = self.session.product
        rows = self._rows = services.versions(self.session.models_dir, product) if product else []
        self.table.setRowCount(len(rows))
        for r, meta in enumerate(rows):
            created = local_time(meta["created"], "%Y-%m-%d %H:%M") if meta.get("created") else ""
            values = (str(meta["version"]), created,
                      f"{meta['threshold']:.4g}" if "threshold" in meta else "–",
                      str(meta.get("counts", {}).get("memory_bank", "–")), meta.get("change") or meta.get("error", ""))
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(values[-1])
                self.table.setItem(r, c, item)
        for column in range(len(self.COLUMNS) - 1):  # the last one takes the room left
            self.table.resizeColumnToContents(column)
        model = self.session.model  # the selection rests on the version in use, never on a row that moved
        in_use = [r for r, meta in enumerate(rows) if model is not None and meta["version"] == model.version]
        if in_use:
            self.table.selectRow(in_use[0])
        else:
            self.table.clearSelection()
        self._selection_changed()

    def selected_version(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return int(self.table.item(rows[0].row(), 0).text()) if rows else None

    def _selection_changed(self) -> None:
        version = self.selected_version()
        model = self.session.model
        rows = self.table.selectionModel().selectedRows()
        in_use = " (in use)" if model is not None and version == model.version else ""
        self.change.setText(f"Version {version}{in_use}: {self.table.item(rows[0].row(), len(self.COLUMNS) - 1).text()}"
                            if rows else "Select a version to see what changed in it, or to roll back to it.")
        self.rollback.setEnabled(version is not None and model is not None and version != model.version
                                 and self.session.may("rollback"))
        self.resign.setEnabled(self._refused() is not None and self.session.may("resign"))
        what = "rollback" if self._refused() is None else "resign"
        show_lock(self.locked, self.session.locked_reason(what) if self._rows else "")

    def _refused(self) -> dict | None:
        """The selected version's listing when this station refuses it, else None."""
        version = self.selected_version()
        return next((meta for meta in self._rows if meta["version"] == version and "error" in meta), None)

    def sign(self, confirm: bool = True) -> None:
        refused, product = self._refused(), self.session.product
        if refused is None or product is None or not self.session.allow("resign"):
            return
        version = refused["version"]
        if confirm and not confirm_on_running_line(
                self, self.session, "Sign a model",
                f"Sign version {version} of '{product}'? This station refuses it now:\n{refused['error']}\n\n"
                f"Sign it only when you know where it comes from and have checked it (History, Calibrate): it is "
                f"saved, signed, as the next version, and the line may use it.", always=True):
            return
        try:
            old, new = self.session.changes.resign(product, version)
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.session.error(exc)
            return
        self.session.info(f"'{product}' version {new.version}: {new.change}.")
        self.session.set_model(new, None)

    def roll_back(self, confirm: bool = True) -> None:
        version, product = self.selected_version(), self.session.product
        if version is None or product is None or not self.session.allow("rollback"):
            return
        if confirm and not confirm_on_running_line(self, self.session, "Roll back",
                                                   rollback_text(self.session.models_dir, self.session.model,
                                                                 version), always=True):
            return
        try:
            new = self.session.changes.rollback(product, version)
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.session.error(exc)
            return
        self.session.info(f"'{product}' version {new.version}: {new.change}.")
        self.session.set_model(new, None)  # the kept training features are not this model's


class TeachTab(QWidget):
    """The inspection region (left) and the model's versions (right)."""

    def __init__(self, session: Session):
        super().__init__()
        self.editor = RegionEditor(session)
        self.versions = VersionsPanel(session)
        region, versions = QGroupBox("Inspection region"), QGroupBox("Model versions")
        QVBoxLayout(region).addWidget(self.editor)
        QVBoxLayout(versions).addWidget(self.versions)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter("teach", region, versions, (600, 500), (1, 0)))
