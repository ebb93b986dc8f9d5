"""Widgets shared by the tabs: the image view with heatmap and boxes, the progress panel,
thumbnail strips, a folder field; and the small image helpers the workers call."""
from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QLinearGradient, QPainter, QPixmap
from PySide6.QtWidgets import (QComboBox, QFileDialog, QGraphicsRectItem, QHBoxLayout, QLabel, QLineEdit,
                               QListView, QListWidget, QListWidgetItem, QProgressBar, QPushButton,
                               QSplitter, QVBoxLayout, QWidget)

from ..drawing import JET
from ..paths import bundle_dir

RESOURCES = bundle_dir() / "resources"
HEAT_SIZE = 256  # the anomaly map is smooth: painted at this size, stretched over the image
DISPLAY_SIZE = 1600  # an image is painted at most this large (an 8000 px part is made small off the GUI thread)
# The heat scale runs from 0 (blue) to twice the threshold (red), in the JET colours of the saved
# overlays (inspector.drawing). On screen it is transparent below half the threshold and fades
# in up to the threshold, so a good part is not tinted blue all over.
HEAT_ALPHA = np.clip((np.arange(256) - 64) / 64.0, 0.0, 1.0)  # 0 up to 1/4 of the scale, 1 from 1/2
HEAT_LUT = np.column_stack([JET, np.round(255 * HEAT_ALPHA)]).astype(np.uint8)
BOX_PEN = pg.mkPen("#ff2020", width=2)
ACCEPTED_PEN = pg.mkPen("#b8bcc2", width=2, style=Qt.PenStyle.DashLine)  # regions accepted for their size
HEATMAPS = ("Memory bank", "Defect classifier")  # with defect heads, a part shows either


def local_time(iso: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A logged (UTC) time as the station's local time: every time on screen is local."""
    return datetime.fromisoformat(iso).astimezone().strftime(fmt)


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


def styled_label(name: str, text: str = "", wrap: bool = True) -> QLabel:
    """A label styled by its object name ("hint", "warning", "detail", ...), wrapping its words."""
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(wrap)
    return label


def lock_note() -> QLabel:
    """A visible line saying why the controls beside it are locked (hidden when they are not)."""
    label = styled_label("warning")
    label.hide()
    return label


def show_lock(label: QLabel, reason: str) -> None:
    label.setText(reason)
    label.setVisible(bool(reason))


def icon(name: str) -> QIcon:
    return QIcon(str(RESOURCES / "icons" / f"{name}.svg"))


# ---- image helpers (plain numpy: workers call them) -----------------------------------
def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def thumbnail(image: np.ndarray, size: int = 96) -> np.ndarray:
    return _scaled(image, size / max(image.shape[:2]))


def display_image(image: np.ndarray, boxes=()) -> tuple[np.ndarray, list]:
    """The image made small enough to paint (in a worker), with its (x, y, w, h) boxes scaled with it."""
    scale = DISPLAY_SIZE / max(image.shape[:2])
    if scale >= 1.0:
        return image, list(boxes)
    return _scaled(image, scale), [tuple(v * scale for v in box) for box in boxes]


def display_map(anomaly_map: np.ndarray | None) -> np.ndarray | None:
    """The anomaly map made small for painting (it is stretched back over the image); None stays None."""
    if anomaly_map is None:
        return None
    scale = HEAT_SIZE / max(anomaly_map.shape)
    return anomaly_map if scale >= 1.0 else _scaled(anomaly_map, scale)


def to_pixmap(image: np.ndarray) -> QPixmap:
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QPixmap.fromImage(QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())


# ---- widgets ------------------------------------------------------------------------
class ResultView(pg.GraphicsLayoutWidget):
    """An image with its anomaly map as a heatmap (opacity adjustable, can be hidden), red
    boxes around the regions and dashed grey ones around those accepted for their size, each
    with its label when given; a caption line below (unless `caption` is False). With the
    classifier's map too (a model with defect heads), `choice` (placed by the view's owner,
    shown only then) switches the heatmap between the two."""

    def __init__(self, parent=None, caption: bool = True):
        super().__init__(parent)
        self.setBackground("#1b1d21")
        self.ci.layout.setContentsMargins(2, 2, 2, 2)
        self.box = self.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.caption = self.addLabel("", row=1, col=0, color="#c8ccd2", size="10pt") if caption else None
        self.image = pg.ImageItem(axisOrder="row-major")
        self.heat = pg.ImageItem(axisOrder="row-major", lut=HEAT_LUT)
        self.heat.setZValue(1)
        self.box.addItem(self.image)
        self.box.addItem(self.heat)
        self._rects: list = []  # the boxes and their labels
        self._shape = None
        self._shown: tuple = (None,)  # what `display` was last given, painted again on a switch
        self.choice = QComboBox()
        self.choice.addItems(HEATMAPS)
        self.choice.setToolTip("Memory bank: how unlike the good parts each place is. Defect classifier: "
                               "where the classifier trained on known defects sees one (probability).")
        self.choice.hide()
        self.choice.currentIndexChanged.connect(lambda _: self.display(*self._shown))
        self.classifier_shown = False  # the heatmap on screen is the classifier's (a probability, 0 to 1)
        self.set_heat(True, 0.5)

    def set_heat(self, visible: bool, opacity: float) -> None:
        self.heat.setVisible(visible)
        self.heat.setOpacity(opacity)

    def display(self, image: np.ndarray | None, heat: np.ndarray | None = None, level: float = 1.0,
                boxes=(), caption: str = "", accepted=(), labels=(), activation: np.ndarray | None = None) -> None:
        """`heat` is painted from blue (0) to red (`level`), or the classifier's `activation` (0 to 1) where
        `choice` says so; boxes and accepted boxes are (x, y, w, h) in pixels, `labels` the texts of the
        boxes, then of the accepted ones."""
        self._shown = (image, heat, level, boxes, caption, accepted, labels, activation)
        self.choice.setVisible(image is not None and activation is not None)
        self.classifier_shown = image is not None and activation is not None and self.choice.currentIndex() == 1
        if self.classifier_shown:
            heat, level = activation, 1.0
        for mark in self._rects:
            self.box.removeItem(mark)
        self._rects = []
        if self.caption is not None:
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
        marked = [(box, BOX_PEN) for box in boxes] + [(box, ACCEPTED_PEN) for box in accepted]
        for ((x, y, bw, bh), pen), label in zip(marked, [*labels, *[""] * len(marked)]):
            rect = QGraphicsRectItem(x, y, bw, bh)
            rect.setPen(pen)
            self._rects.append(rect)
            if label:
                text = pg.TextItem(label, color=pen.color(), anchor=(0, 1))
                text.setPos(x, y)
                self._rects.append(text)
        for mark in self._rects:
            mark.setZValue(2)
            self.box.addItem(mark)
        if self._shape != (h, w):
            self._shape = (h, w)
            self.box.autoRange(padding=0.01)

    def shown_height(self) -> float:
        """How tall the image is on screen, in pixels (0 when there is none)."""
        if self._shape is None:
            return 0.0
        return self.box.mapViewToDevice(QRectF(0, 0, self._shape[1], self._shape[0])).boundingRect().height()


class HeatScale(QWidget):
    """The colour scale of the heatmap: 0, the threshold (mid-scale) and twice the threshold."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.threshold: float | None = None
        self.name = "threshold"  # what the middle of the scale is
        self.setMinimumSize(220, 34)
        self.setToolTip("Heatmap colours: transparent below half the threshold, red at twice the threshold.\n"
                        "A part is NG when its highest score reaches the threshold.")

    def set_threshold(self, threshold: float | None, name: str = "threshold") -> None:
        self.threshold, self.name = threshold, name
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        bar = QRectF(6, 2, self.width() - 12, 12)
        painter.fillRect(bar, QColor("#ffffff"))  # the low end is transparent: the part shows through
        gradient = QLinearGradient(bar.left(), 0, bar.right(), 0)
        for i in (*range(0, 256, 16), 255):
            gradient.setColorAt(i / 255, QColor(*(int(v) for v in HEAT_LUT[i])))
        painter.fillRect(bar, gradient)
        painter.setPen(QColor("#1f2328"))
        painter.drawRect(bar)
        t = self.threshold
        labels = ("0", self.name if t is None else f"{self.name} {t:.3g}", "" if t is None else f"{2 * t:.3g}")
        metrics = painter.fontMetrics()
        for fraction, text in zip((0.0, 0.5, 1.0), labels):
            x = bar.left() + fraction * bar.width()
            painter.drawLine(int(x), int(bar.bottom()), int(x), int(bar.bottom()) + 3)
            width = metrics.horizontalAdvance(text)
            left = min(max(0, x - width / 2), self.width() - width)
            painter.drawText(int(left), int(bar.bottom()) + 4 + metrics.ascent(), text)


class ProgressPanel(QWidget):
    """A progress bar with the stage in words, the time left in that stage and the time
    elapsed since `begin` (ticking while the work runs, kept by `finish`)."""

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
        self._stage, self._since, self._started, self._text = None, 0.0, None, ""
        self._steps, self._seen = 0, []
        self._clock = QTimer(self, interval=1000)
        self._clock.timeout.connect(self._show)
        self.finish("")

    def elapsed(self) -> float:
        return 0.0 if self._started is None else time.monotonic() - self._started

    def begin(self, text: str, steps: int = 0) -> None:
        """Start (or, with the clock running, go on with) work described by `text`, done in `steps` stages (0: one):
        the time left is then said of the stage under way, as 'step i of n'."""
        self._stage = None
        if steps or not self._clock.isActive():
            self._steps, self._seen = steps, []
        if not self._clock.isActive():
            self._started = time.monotonic()
            self._clock.start()
        self.bar.setRange(0, 0)  # busy until the first report
        self._show(text)

    def _show(self, text: str | None = None) -> None:
        if text is not None:
            self._text = text
        self.label.setText(f"{self._text} ({duration(self.elapsed())} elapsed)" if self._clock.isActive()
                           else self._text)

    def step(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self._stage:
            self._stage, self._since = stage, now
            if stage not in self._seen:
                self._seen.append(stage)
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        number = self._seen.index(stage) + 1
        steps = max(self._steps, number)
        text = (f"Step {number} of {steps}, {stage}: {done} of {total}" if self._steps > 1
                else f"{stage.capitalize()}: {done} of {total}")
        elapsed = now - self._since
        if 0 < done < total and elapsed > 0.5:
            text += f", about {duration(elapsed * (total - done) / done)} left"
            if number < steps:
                text += " in this step"
        self._show(text)

    def finish(self, text: str) -> None:
        self._clock.stop()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self._show(text)


def duration(seconds: float) -> str:
    """'45 s', '2 min 05 s', '3 h 02 min'."""
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


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
        self.edit.setMinimumWidth(300)
        self.edit.textChanged.connect(lambda text: self.edit.setToolTip(text or placeholder))
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
        self.edit.setCursorPosition(len(self.edit.text()))  # a long path shows its end: the folder's name
        if emit:
            self._emit()

    def _emit(self) -> None:
        self._emitted = self.path()
        self.chosen.emit(self._emitted)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.dialog_title, self.path())
        if folder:
            self.set_path(folder)
