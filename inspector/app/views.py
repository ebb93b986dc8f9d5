"""Widgets shared by the tabs: the image view with heatmap and boxes, the progress panel,
thumbnail strips, a folder field; and the small image helpers the workers call."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QFileDialog, QGraphicsRectItem, QHBoxLayout, QLabel, QLineEdit,
                               QListView, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                               QSplitter, QVBoxLayout, QWidget)

from ..drawing import JET
from ..paths import bundle_dir

RESOURCES = bundle_dir() / "resources"
HEAT_SIZE = 256  # the anomaly map is smooth: painted at this size, stretched over the image
BOX_PEN = pg.mkPen("#ff2020", width=2)


def splitter(name: str, left: QWidget, right: QWidget, sizes: tuple[int, int],
             stretch: tuple[int, int] = (0, 1)) -> QSplitter:
    """A named (so its sizes are remembered) left | right splitter."""
    split = QSplitter()
    split.setObjectName(name)
    split.addWidget(left)
    split.addWidget(right)
    for index, factor in enumerate(stretch):
        split.setStretchFactor(index, factor)
    split.setSizes(list(sizes))
    return split


def icon(name: str) -> QIcon:
    return QIcon(str(RESOURCES / "icons" / f"{name}.svg"))


# ---- image helpers (plain numpy: workers call them) -----------------------------------
def thumbnail(image: np.ndarray, size: int = 96) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def display_map(anomaly_map: np.ndarray) -> np.ndarray:
    """The anomaly map made small for painting (it is stretched back over the image)."""
    h, w = anomaly_map.shape
    scale = min(1.0, HEAT_SIZE / max(h, w))
    if scale == 1.0:
        return anomaly_map
    return cv2.resize(anomaly_map, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def to_pixmap(image: np.ndarray) -> QPixmap:
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QPixmap.fromImage(QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())


# ---- widgets ------------------------------------------------------------------------
class ResultView(pg.GraphicsLayoutWidget):
    """An image with its anomaly map as a heatmap (opacity adjustable, can be hidden) and
    red boxes around the regions; a caption line below."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("#1b1d21")
        self.box = self.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.caption = self.addLabel("", row=1, col=0, color="#c8ccd2", size="10pt")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.heat = pg.ImageItem(axisOrder="row-major", lut=JET)
        self.heat.setZValue(1)
        self.box.addItem(self.image)
        self.box.addItem(self.heat)
        self._rects: list[QGraphicsRectItem] = []
        self._shape = None
        self.set_heat(True, 0.5)

    def set_heat(self, visible: bool, opacity: float) -> None:
        self.heat.setVisible(visible)
        self.heat.setOpacity(opacity)

    def display(self, image: np.ndarray | None, heat: np.ndarray | None = None, level: float = 1.0,
                boxes=(), caption: str = "") -> None:
        """`heat` is painted from blue (0) to red (`level`); boxes are (x, y, w, h) in pixels."""
        for rect in self._rects:
            self.box.removeItem(rect)
        self._rects = []
        self.caption.setText(caption)
        if image is None:
            self.image.clear()
            self.heat.clear()
            self._shape = None
            return
        h, w = image.shape[:2]
        self.image.setImage(image, autoLevels=False, levels=(0, 255))
        if heat is None:
            self.heat.clear()
        else:
            self.heat.setImage(heat, autoLevels=False, levels=(0.0, level))
            self.heat.setRect(QRectF(0, 0, w, h))
        for x, y, bw, bh in boxes:
            rect = QGraphicsRectItem(x, y, bw, bh)
            rect.setPen(BOX_PEN)
            rect.setZValue(2)
            self.box.addItem(rect)
            self._rects.append(rect)
        if self._shape != (h, w):
            self._shape = (h, w)
            self.box.autoRange(padding=0.01)


class ProgressPanel(QWidget):
    """A progress bar with the stage in words and the time left in that stage."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(False)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.label)
        self._stage, self._since = None, 0.0
        self.finish("")

    def begin(self, text: str) -> None:
        self._stage = None
        self.bar.setRange(0, 0)  # busy until the first report
        self.label.setText(text)

    def step(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self._stage, self._since = stage, now
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        text = f"{stage.capitalize()}: {done} of {total}"
        elapsed = now - self._since
        if 0 < done < total and elapsed > 0.5:
            text += f", about {_duration(elapsed * (total - done) / done)} left"
        self.label.setText(text)

    def finish(self, text: str) -> None:
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.label.setText(text)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 90 else f"{seconds // 60} min {seconds % 60:02d} s"


class Thumbnails(QListWidget):
    """Small pictures with captions; keeps the newest `limit` (added first when `newest_first`)."""

    def __init__(self, size: int = 96, limit: int = 60, newest_first: bool = False, wrap: bool = True):
        super().__init__()
        self.limit, self.newest_first = limit, newest_first
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(size, size))
        self.setGridSize(QSize(size + 16, size + 30))
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWrapping(wrap)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)

    def add(self, image: np.ndarray, caption: str, tooltip: str = "") -> None:
        item = QListWidgetItem(QIcon(to_pixmap(image)), caption)
        item.setToolTip(tooltip or caption)
        item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter)
        if self.newest_first:
            self.insertItem(0, item)
            while self.count() > self.limit:
                self.takeItem(self.count() - 1)
        elif self.count() < self.limit:
            self.addItem(item)


class FolderField(QWidget):
    """A folder path with a Browse button; `chosen` is emitted with the path when it changes."""
    chosen = Signal(str)

    def __init__(self, placeholder: str, dialog_title: str):
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setClearButtonEnabled(True)
        self.dialog_title = dialog_title
        browse = QPushButton(icon("folder"), "")
        browse.setToolTip("Browse…")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit, 1)
        layout.addWidget(browse)
        self._emitted = ""
        self.edit.editingFinished.connect(lambda: self.path() != self._emitted and self._emit())

    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str | Path, emit: bool = True) -> None:
        self.edit.setText(str(path))
        if emit:
            self._emit()

    def _emit(self) -> None:
        self._emitted = self.path()
        self.chosen.emit(self._emitted)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.dialog_title, self.path())
        if folder:
            self.set_path(folder)
