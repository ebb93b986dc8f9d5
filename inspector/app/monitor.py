"""Monitor tab: run the line from a watched folder, a camera (or stream, or video file) or files opened by hand; show
the newest verdict as large as the screen allows, the shift's counters and its latest NG parts.

The banner always tells the truth: the line is stopped, waiting for parts, has lost its source, or shows a verdict
with its part and age; a verdict older than the expected time between parts is shown as stale, never as a live OK.
The counters and the NG strip come from the result log (since the stored start of the shift), so they survive a
restart.

The line runs in one worker (inspector.station, shared with the CLI); the Station logs every frame. The GUI paints
only the newest outcome: when outcomes arrive faster than it paints, the older ones are counted but not drawn."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QRect, Qt, QTimer
from PySide6.QtWidgets import (QCheckBox, QComboBox, QLineEdit, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QFrame,
                               QGridLayout, QGroupBox, QHBoxLayout, QLabel, QListWidgetItem, QMessageBox,
                               QPushButton, QSlider, QStackedWidget, QVBoxLayout, QWidget)

from .. import services
from ..changes import KINDS
from ..common import yield_rate
from ..core.model import Model
from ..core.profile import ADVICE
from ..data.images import load_image
from ..drawing import RED, draw_boxes, heat_range
from ..errors import InspectorError
from ..frames import DEFAULT_LIMIT_GB, FOLDER as FRAMES_FOLDER, FrameKeeper, part_name
from ..lineio.line_io import LineIO, LineSettings
from ..sources.camera import list_cameras
from ..sources.trigger import Trigger
from ..station import Outcome
from ..store.results import InspectionRecord, ResultStore
from .history import look
from .session import Session, settings
from .teaching import PartButtons
from .views import (FolderField, HeatScale, ResultView, Thumbnails, display_image, display_map, duration, icon,
                    local_time, splitter, styled_label, thumbnail)
from .worker import Worker

SOURCES = {"folder": "Watch folder", "camera": "Camera or video", "file": "Files opened by hand"}
COUNTERS = {"inspected": "Inspected", "OK": "OK", "NG": "NG", "ERROR": "Errors", "yield": "Yield"}
NG_STRIP = 20
THUMB = 72
STALE_S = 10.0  # default: a verdict older than this is stale
SETTLE_S = 0.5
LINE_IO = {"opcua": ("OPC UA server", "off; e.g. 4840 (this computer) or 0.0.0.0:4840"),  # field: (label, hint)
           "modbus": ("Modbus TCP server", "off; e.g. 502 (this computer) or 0.0.0.0:502"),
           "mqtt": ("MQTT broker", "off; broker HOST[:PORT], e.g. 127.0.0.1:1883"),
           "station": ("Station name", "this computer's name")}


# ---- what the banner says (plain data: the tests read it too) --------------------------------
def banner_text(running: bool, source: str | None, reason: str | None, last: InspectionRecord | None,
                age_s: float, stale_s: float, idle: str) -> tuple[str, str, str]:
    """(state, big word, detail). States: 'stopped', 'waiting', 'lost', 'stale', or the
    verdict 'OK' / 'NG' / 'ERROR' of a part inspected less than `stale_s` seconds ago.
    `source` is the source's state while running: None or 'connecting', 'live', 'lost', or
    'pending' (live, and `reason` says which file is being waited for, and how long)."""
    seen = "" if last is None else f"{last.verdict}, {part_name(last.image_path)}, {duration(age_s)} ago"
    if not running:
        return "stopped", "STOPPED", idle + (f"\nLast part: {seen}." if last else "")
    if source == "lost":
        return "lost", "NO SOURCE", reason or "The source is lost; reconnecting."
    if source not in ("live", "pending"):
        return "waiting", "WAITING", reason or "Connecting to the source…"
    if last is None:
        return "waiting", "WAITING", reason if source == "pending" else f"Waiting for the first part. {reason or ''}".strip()
    if source == "pending" and age_s > stale_s:
        return "waiting", "WAITING", f"{reason}\nLast part: {seen}."
    if age_s > stale_s:
        return "stale", "WAITING", f"No new part for {duration(age_s)}.\nLast part: {seen}."
    if last.verdict == "ERROR":
        return "ERROR", "ERROR", f"{part_name(last.image_path)} · {duration(age_s)} ago\n{last.error or ''}"
    return last.verdict, last.verdict, (f"{part_name(last.image_path)} · {duration(age_s)} ago\n"
                                        f"Score {last.score:.4g}   Threshold {last.threshold:.4g}")


# ---- worker functions ----------------------------------------------------------------------
def ng_thumbnail(image: np.ndarray, regions: list[dict]) -> np.ndarray:
    """An NG part for the strip: the image with its region boxes, small."""
    thick = max(2, image.shape[1] // 80)
    return thumbnail(draw_boxes(image, [(r["x"], r["y"], r["w"], r["h"]) for r in regions], RED, thick), THUMB)


def _shown(outcome: Outcome) -> tuple:
    """What the GUI paints of an outcome, made ready in the worker: the image, small, with its boxes
    and those accepted for their size, the small heatmaps (the bank's; the classifier's, or None
    without defect heads), and an NG part's thumbnail."""
    result = outcome.result
    if result is None:
        return outcome, None, None
    thumb = ng_thumbnail(outcome.image, outcome.record.regions) if result.verdict == "NG" else None
    image, boxes = display_image(outcome.image, [(r.x, r.y, r.w, r.h) for r in result.regions + result.accepted])
    n = len(result.regions)
    return outcome, (image, boxes[:n], boxes[n:], display_map(result.anomaly_map),
                     display_map(result.activation_map)), thumb


def _logged_ng_parts(job: Worker, store: ResultStore, product: str, since: str) -> list:
    """The shift's latest NG parts from the log, newest first, with their thumbnails where the image is still there."""
    parts = []
    for record in store.query(product=product, verdict="NG", since=since, limit=NG_STRIP):
        path, thumb = services.find_image(record), None
        if path is not None:
            try:
                thumb = ng_thumbnail(load_image(path), record.regions)
            except InspectorError:
                pass
        parts.append((record, thumb))
    return parts


def _run_line(job: Worker, models_dir: Path, model: Model, store: ResultStore, kind: str, target,
              options: dict, snap: Trigger | None, io: LineIO | None) -> None:
    def on_outcome(outcome):
        job.report(("outcome", *_shown(outcome)))

    def on_status(state, reason):
        job.report(("status", state, reason))

    if io is not None:  # the PLC and the broker hear each part first; a PLC triggers the line
        on_outcome, on_status = io.on_outcome(on_outcome), io.on_status(on_status)
        options = options | io.line_options()
        snap = options.pop("trigger") or snap
        io.link.listen_select(lambda selected: job.report(("model", selected)))
    services.run_line(models_dir, store, model.product, kind, target, job.cancel, on_outcome,
                      lambda level, text: job.report((level, text)), trigger=snap, model=model,
                      on_status=on_status, **options)


class PartDialog(QDialog):
    """One logged part, opened from the NG strip: its image with the heatmap and boxes."""

    def __init__(self, record: InspectionRecord, session: Session, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"{record.verdict} {part_name(record.image_path)} · {local_time(record.time)}")
        self.resize(760, 720)
        self.view = ResultView()
        self.details = QLabel("Loading…")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        column = QVBoxLayout(self)
        column.addWidget(self.view, 1)
        column.addWidget(self.view.choice, 0, Qt.AlignmentFlag.AlignLeft)
        column.addWidget(self.details)
        column.addWidget(close, 0, Qt.AlignmentFlag.AlignRight)
        worker = Worker(look, record, session, {})
        worker.returned.connect(lambda shown: self._show(record, *shown))
        worker.errored.connect(lambda exc: self.details.setText(str(exc)))
        worker.start()

    def _show(self, record, image, heat, level, boxes, note: str, activation) -> None:
        self.view.display(image, heat, level, boxes, record.image_path or "", activation=activation)
        self.details.setText(f"Score {record.score:.4g}, threshold {record.threshold:.4g}, "
                             f"{len(record.regions)} region(s). {note}")


class MonitorTab(QWidget):
    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self._line: Worker | None = None
        self._snap: Trigger | None = None
        self._newest: tuple | None = None
        self._paint_pending = False
        self._cameras_listed = False
        self._product: str | None = None
        self._source_state: tuple[str | None, str | None] = (None, None)
        self._last: InspectionRecord | None = None  # the newest part of this product on screen
        self._ng_query = 0
        self.dialogs: list[PartDialog] = []
        self.counts: Counter = Counter()
        self.painted = 0  # outcomes painted (fewer than counted when the GUI falls behind)

        # ---- source
        self.source = QComboBox()
        for kind, text in SOURCES.items():
            self.source.addItem(text, kind)
        self.folder = FolderField("Folder where the images arrive", "Choose the folder to watch")
        self.camera = QComboBox()
        self.camera.setEditable(True)
        self.camera.lineEdit().setPlaceholderText("Camera index, stream URL or video file")
        self.camera.setToolTip("A camera index (0, 1, …), a stream URL (rtsp://…) or a video file.\n"
                               "Frames are named source#N: N is the frame's number from the source since "
                               "the line started, in continuous and in Snap mode alike.")
        find = QPushButton(icon("refresh"), "")
        find.setToolTip("Find cameras")
        find.clicked.connect(self.find_cameras)
        video = QPushButton(icon("folder"), "")
        video.setToolTip("Choose a video file…")
        video.clicked.connect(self._choose_video)
        self.snap_only = QCheckBox("Inspect only on Snap (F6)")
        camera_page = QWidget()
        grid = QGridLayout(camera_page)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.camera, 0, 0)
        grid.addWidget(find, 0, 1)
        grid.addWidget(video, 0, 2)
        grid.addWidget(self.snap_only, 1, 0, 1, 3)
        files = QPushButton(icon("folder"), "Open files and inspect…")
        files.clicked.connect(self._open_files)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.folder)
        self.pages.addWidget(camera_page)
        self.pages.addWidget(files)
        self.source.currentIndexChanged.connect(self._source_changed)

        # ---- options
        self.sort_files = QCheckBox("Sort files into OK / NG folders")
        self.settle = self._seconds_box(0.1, 60.0, "A new file is inspected once it has not changed for this "
                                                   "long (raise it for slow network copies).")
        self.keep_frames = QCheckBox("Keep NG camera frames, up to")
        self.keep_frames.setToolTip("NG camera frames are saved so that History and the NG strip can show "
                                    "them later; the oldest are dropped first once the limit is reached.")
        self.frames_limit = QDoubleSpinBox()
        self.frames_limit.setRange(0.1, 1000.0)
        self.frames_limit.setDecimals(1)
        self.frames_limit.setSuffix(" GB")
        self.frames_note = styled_label("hint")
        self.archive = QCheckBox("Archive heatmap overlays")
        self.archive_dir = FolderField("Archive folder", "Choose the archive folder")
        self.archive_dir.edit.setPlaceholderText(str(self._data_dir() / "archive"))
        self.stale = self._seconds_box(1.0, 3600.0, "The banner shows a verdict older than this as stale: "
                                                    "the line expects a part at least this often.")
        self.line_io = {name: QLineEdit() for name in LINE_IO}
        for name, (_, hint) in LINE_IO.items():
            self.line_io[name].setPlaceholderText(hint)
        self.plc_select = QCheckBox("The PLC may select the product")
        self.line_io_status = styled_label("hint", wrap=False)
        self.io: LineIO | None = None
        frames_row = QHBoxLayout()
        frames_row.addWidget(self.keep_frames)
        frames_row.addWidget(self.frames_limit)
        frames_row.addStretch(1)
        self.options = QDialog(self)  # a window of its own: the Monitor tab keeps its room for the parts
        self.options.setWindowTitle("Line options")
        form = QFormLayout(self.options)
        form.addRow(self.sort_files)
        form.addRow("Settle time", self.settle)
        form.addRow(frames_row)
        form.addRow(self.frames_note)
        form.addRow(self.archive)
        form.addRow(self.archive_dir)
        form.addRow("Part expected every", self.stale)
        line_io = QGroupBox("Line I/O (a PLC server triggers the line: one part per trigger)")
        io_form = QFormLayout(line_io)
        for name, (label, _) in LINE_IO.items():
            io_form.addRow(label, self.line_io[name])
        io_form.addRow(self.plc_select)
        form.addRow(line_io)
        close = QPushButton("Close")
        close.clicked.connect(self.options.accept)
        form.addRow(close)
        self.options.setMinimumWidth(460)
        self.options_button = QPushButton("Options…")
        self.options_button.setToolTip("Sorting, settle time, kept NG frames, archive, expected time between parts")
        self.options_button.clicked.connect(self.options.show)
        self.options_summary = styled_label("hint")

        self.start = QPushButton(icon("start"), "Start")
        self.start.setObjectName("primary")
        self.start.setToolTip("Start or stop the line (F5, on every tab)")
        self.start.clicked.connect(self.start_stop)
        self.snap_button = QPushButton(icon("snap"), "Snap")
        self.snap_button.setToolTip("Inspect the next camera frame (F6 or Space)")
        self.snap_button.clicked.connect(self.snap)

        # ---- the shift
        self.counter_labels = {}
        self.shift = QGroupBox("This shift")
        grid = QGridLayout(self.shift)
        grid.setVerticalSpacing(0)
        for i, (key, text) in enumerate(COUNTERS.items()):
            value = styled_label(f"count_{key}", wrap=False)
            value.setProperty("counter", True)
            value.setAlignment(Qt.AlignmentFlag.AlignCenter)
            title = QLabel(text)
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(value, 0, i)
            grid.addWidget(title, 1, i)
            self.counter_labels[key] = value
        self.shift_since = styled_label("hint", wrap=False)
        new_shift = QPushButton(KINDS["shift"].label)
        new_shift.setToolTip("Start a new shift: the counters start again from zero (the log keeps everything)")
        new_shift.clicked.connect(self._ask_new_shift)
        grid.addWidget(self.shift_since, 2, 0, 1, 3)
        grid.addWidget(new_shift, 2, 3, 1, 2)
        self.ng_strip = Thumbnails(size=THUMB, limit=NG_STRIP, newest_first=True, wrap=True)
        self.ng_strip.setToolTip("Double-click a part to open it with its heatmap")
        self.ng_strip.itemActivated.connect(self.open_part)
        ng_title = styled_label("heading", "Latest NG parts (double-click to open)", wrap=False)

        source = QGroupBox("Source")
        column = QVBoxLayout(source)
        column.addWidget(self.source)
        column.addWidget(self.pages)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start, 1)
        buttons.addWidget(self.snap_button)
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 4, 0)
        column.addWidget(source)
        toggle_row = QHBoxLayout()
        toggle_row.addWidget(self.options_button)
        toggle_row.addWidget(self.options_summary, 1)
        column.addLayout(toggle_row)
        column.addLayout(buttons)
        column.addWidget(self.line_io_status)
        column.addWidget(self.shift)
        self.plant = styled_label("hint")  # connected to the plant database, rows behind (when one is given)
        self.plant.setVisible(session.shipper is not None)
        column.addWidget(self.plant)
        column.addWidget(ng_title)
        column.addWidget(self.ng_strip, 1)

        # ---- the newest verdict: a banner above the part, the part as large as it fits
        self.banner = QFrame()
        self.banner.installEventFilter(self)  # a banner that grows pushes the part dialogs down (eventFilter)
        self.banner.setObjectName("banner")
        self.verdict = styled_label("verdict", "–", wrap=False)
        self.detail = styled_label("detail")
        row = QHBoxLayout(self.banner)
        row.setContentsMargins(12, 4, 12, 4)
        row.addWidget(self.verdict)
        row.addWidget(self.detail, 1)
        self.drift = styled_label("warning")  # the newest part does not look like the good images (core.profile)
        self.drift.hide()
        self.view = ResultView(caption=False)
        self.heat = QCheckBox("Heatmap")
        self.heat.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setMinimumWidth(140)
        self.opacity.setToolTip("Opacity of the heatmap over the part")
        self.opacity_value = QLabel()
        self.opacity_value.setMinimumWidth(40)
        for control in (self.heat.toggled, self.opacity.valueChanged):
            control.connect(self._heat_changed)
        self.heatmap = self.view.choice  # shown for a model with defect heads
        self.heatmap.currentIndexChanged.connect(lambda _: self._show_scale())
        self.findings = styled_label("detail")  # the classifier's probability, the regions' areas, those accepted
        self.findings.hide()
        self.scale = HeatScale()
        controls = QHBoxLayout()
        controls.addWidget(self.heat)
        controls.addWidget(self.heatmap)
        controls.addWidget(QLabel("Opacity"))
        controls.addWidget(self.opacity)
        controls.addWidget(self.opacity_value)
        controls.addSpacing(16)
        controls.addWidget(self.scale, 1)
        self.part_buttons = PartButtons(session)  # teach the part on screen (in the same row: the part keeps its room)
        controls.addWidget(self.part_buttons)
        right = QWidget()
        column = QVBoxLayout(right)
        column.setContentsMargins(4, 0, 0, 0)
        column.addWidget(self.banner)
        column.addWidget(self.findings)
        column.addWidget(self.drift)
        column.addWidget(self.view, 1)
        column.addLayout(controls)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter("monitor_split", left, right, (400, 960)))

        self._clock = QTimer(self, interval=1000)  # the banner's age and staleness
        self._clock.timeout.connect(self._show_banner)
        self._clock.timeout.connect(self._show_line_io)
        self._clock.start()
        self._restore()
        self._show_line_io()
        self._heat_changed()
        for box in (self.keep_frames, self.frames_limit, self.sort_files, self.archive, self.settle,
                    self.stale):
            signal = box.toggled if isinstance(box, QCheckBox) else box.valueChanged
            signal.connect(self._options_changed)
        self._options_changed()
        session.changed.connect(self._model_changed)
        self._model_changed()

    @staticmethod
    def _seconds_box(low: float, high: float, tip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setDecimals(1)
        box.setSingleStep(0.5)
        box.setSuffix(" s")
        box.setToolTip(tip)
        return box

    # ---- options remembered between runs ------------------------------------------------
    def _restore(self) -> None:
        s = settings()
        self.source.setCurrentIndex(max(0, self.source.findData(s.value("monitor/source", "folder"))))
        self.folder.set_path(s.value("monitor/folder", ""), emit=False)
        self.camera.setEditText(s.value("monitor/camera", "0"))
        # switches are kept as 0/1: an INI file has no booleans
        self.sort_files.setChecked(int(s.value("monitor/sort_files", 0)) == 1)
        self.archive.setChecked(int(s.value("monitor/archive", 0)) == 1)
        self.archive_dir.set_path(s.value("monitor/archive_dir", ""), emit=False)
        self.keep_frames.setChecked(int(s.value("monitor/keep_frames", 1)) == 1)
        self.frames_limit.setValue(float(s.value("monitor/frames_limit_gb", DEFAULT_LIMIT_GB)))
        self.settle.setValue(float(s.value("monitor/settle_s", SETTLE_S)))
        self.stale.setValue(float(s.value("monitor/stale_s", STALE_S)))
        for name, edit in self.line_io.items():
            edit.setText(s.value(f"monitor/lineio_{name}", ""))
        self.plc_select.setChecked(int(s.value("monitor/lineio_product_select", 0)) == 1)
        self._source_changed()

    def _remember(self) -> None:
        s = settings()
        for key, value in (("source", self.source.currentData()), ("folder", self.folder.path()),
                           ("camera", self.camera.currentText()), ("sort_files", int(self.sort_files.isChecked())),
                           ("archive", int(self.archive.isChecked())), ("archive_dir", self.archive_dir.path()),
                           ("keep_frames", int(self.keep_frames.isChecked())),
                           ("frames_limit_gb", self.frames_limit.value()), ("settle_s", self.settle.value()),
                           ("stale_s", self.stale.value()),
                           ("lineio_product_select", int(self.plc_select.isChecked())),
                           *((f"lineio_{name}", edit.text().strip()) for name, edit in self.line_io.items())):
            s.setValue(f"monitor/{key}", value)

    def _data_dir(self) -> Path:
        return self.session.models_dir.resolve().parent

    def frames_dir(self) -> Path:
        return self._data_dir() / FRAMES_FOLDER

    def _options_changed(self) -> None:
        self.frames_limit.setEnabled(self.keep_frames.isChecked() and not self.running)
        kept = [text for box, text in ((self.sort_files, "sorting files"),
                                       (self.keep_frames, f"keeping NG frames (≤ {self.frames_limit.value():g} GB)"),
                                       (self.archive, "archiving overlays")) if box.isChecked()]
        kept += [f"settle {self.settle.value():g} s", f"stale after {self.stale.value():g} s"]
        self.options_summary.setText(", ".join(kept))
        self.frames_note.setText(f"in {self.frames_dir()}; the oldest are dropped first.")

    def _source_changed(self) -> None:
        self.pages.setCurrentIndex(self.source.currentIndex())
        if self.source.currentData() == "camera" and not self._cameras_listed:
            self.find_cameras()
        self._update_buttons()

    def _heat_changed(self) -> None:
        self.opacity_value.setText(f"{self.opacity.value()} %")
        self.opacity.setEnabled(self.heat.isChecked())
        self.view.set_heat(self.heat.isChecked(), self.opacity.value() / 100)

    # ---- running the line -------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._line is not None

    def start_stop(self) -> None:
        """F5: start the line from the chosen source, or stop it."""
        if self._line is not None:
            self.stop()
        elif self.source.currentData() == "folder":
            self.run("folder", self.folder.path())
        elif self.source.currentData() == "camera":
            self.run("camera", self.camera.currentText().strip())
        else:
            self._open_files()

    def run(self, kind: str, target) -> None:
        """Start the line: kind 'folder' (a folder), 'camera' (index, URL or video file) or 'file' (a list of files)."""
        model = self.session.model
        if self._line is not None:
            return
        if model is None:
            self.session.warn("Train the product before starting the line.")
            return
        if not target:
            self.session.warn({"folder": "Choose the folder to watch.",
                               "camera": "Enter a camera index, a stream URL or a video file."}.get(kind, ""))
            return
        self._remember()
        options = {
            "sort_files": self.sort_files.isChecked(), "settle_s": self.settle.value(),
            "archive_dir": (self.archive_dir.path() or str(self._data_dir() / "archive"))
            if self.archive.isChecked() else None,
            "frames": FrameKeeper(self.frames_dir(), int(self.frames_limit.value() * 1e9))
            if self.keep_frames.isChecked() else None}
        self._snap = Trigger() if kind == "camera" and self.snap_only.isChecked() else None
        text = {name: edit.text().strip() or None for name, edit in self.line_io.items()}
        line_settings = LineSettings(text["opcua"], text["modbus"], text["mqtt"], text["station"] or "",
                                     self.plc_select.isChecked())
        if (line_settings.plc or line_settings.mqtt) and kind != "file":
            try:
                self.io = LineIO(line_settings, self.session.models_dir, self.session.store)
                self.io.start()
            except InspectorError as exc:
                self.io = None
                self.session.error(exc)
                return
            self.session.info(" · ".join(self.io.status()) + (f". {self.io.products_line}" if line_settings.plc else ""))
        self._source_state = (None, "Connecting to the camera…" if kind == "camera" else None)
        self._last = None  # a new run waits for its own first part, and shows no older one
        self._newest = None
        self.scale.set_threshold(model.threshold)  # the model it starts with, not the last part's
        self._show_part()
        self.part_buttons.set_record(None)
        self._line = worker = Worker(_run_line, self.session.models_dir, model, self.session.store, kind, target,
                                     options, self._snap, self.io)
        worker.yielded.connect(self._reported)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._stopped)
        self.session.set_busy("monitoring", True)
        worker.start()
        self.session.info(f"Line started for '{model.product}' ({SOURCES[kind].lower()}).")
        self._update_buttons()
        self._show_banner()

    def stop(self) -> None:
        if self._line is not None:
            self._line.stop(wait=False)  # the current item finishes and is logged
            self.start.setEnabled(False)
            self.start.setText("Stopping…")

    def snap(self) -> None:
        if self._snap is not None:
            self._snap.set()

    def _failed(self, exc: BaseException) -> None:
        self.session.error(exc)

    def _stopped(self) -> None:
        self._line, self._snap = None, None
        if self.io is not None:
            self.io.stop()
            self.io = None
        self._source_state = (None, None)
        self.session.set_busy("monitoring", False)
        self.session.info("Line stopped.")
        self._update_buttons()
        self._show_banner()

    def _open_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open images to inspect", self.folder.path(),
                                                "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)")
        if paths:
            self.run("file", [Path(p) for p in paths])

    def _choose_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a video file", "",
                                              "Videos (*.avi *.mp4 *.mkv *.mov);;All files (*)")
        if path:
            self.camera.setEditText(path)

    def find_cameras(self) -> None:
        self._cameras_listed = True
        worker = Worker(lambda job: list_cameras())
        worker.returned.connect(self._cameras_found)
        worker.errored.connect(self.session.error)
        worker.start()

    def _cameras_found(self, indices: list[int]) -> None:
        text = self.camera.currentText()
        self.camera.clear()
        self.camera.addItems([str(i) for i in indices])
        self.camera.setEditText(text or (str(indices[0]) if indices else ""))
        self.session.info(f"Cameras found: {', '.join(map(str, indices))}." if indices else "No camera found.")

    # ---- outcomes -----------------------------------------------------------------------
    def _reported(self, item: tuple) -> None:
        kind = item[0]
        if kind in ("info", "warning", "error"):
            self.session.message.emit(kind, item[1])
        elif kind == "status":
            state, reason = item[1:]
            self._source_state = (state, reason)
            self._show_banner()
        elif kind == "model":  # the PLC selected a product: the window shows the line's model
            model = item[1]
            self.session.follow_line(model)
            self.session.info(f"The PLC selected '{model.product}' (model version {model.version}, threshold "
                              f"{model.threshold:.4g}): the line inspects it from the next part.")
        else:
            self._count(*item[1:])

    def _count(self, outcome: Outcome, shown, thumb) -> None:
        record = outcome.record
        if record.verdict == "ERROR":
            self.session.error(f"{part_name(record.image_path)}: {record.error}")
        if outcome.log_error:
            self.session.warn(outcome.log_error)
        if record.product == self.session.product:  # not a part of the product before a PLC's select
            self.counts["inspected"] += 1
            self.counts[record.verdict] += 1
            if thumb is not None:
                self._add_ng(record, thumb)
        self._show_counts()
        self._newest = (outcome, shown)
        if not self._paint_pending:  # paint once the queued outcomes are counted: only the newest
            self._paint_pending = True
            QTimer.singleShot(0, self._paint)

    def _add_ng(self, record: InspectionRecord, thumb) -> None:
        self.ng_strip.add(thumb, local_time(record.time, "%H:%M:%S"),
                          f"NG {part_name(record.image_path)}, score {record.score:.4g}, {local_time(record.time)}")
        self.ng_strip.item(0).setData(Qt.ItemDataRole.UserRole, record)

    def open_part(self, item: QListWidgetItem) -> PartDialog:
        """Open an NG part of the strip with its heatmap and boxes (double-click)."""
        dialog = PartDialog(item.data(Qt.ItemDataRole.UserRole), self.session, self)
        dialog.finished.connect(lambda _: self.dialogs.remove(dialog))
        self.dialogs.append(dialog)
        dialog.show()
        self._place(dialog)
        return dialog

    def eventFilter(self, watched, event) -> bool:
        """When the banner grows (a longer verdict, a new style), the part dialogs it now meets are placed
        below it again, once the layout has settled: the running line stays readable."""
        if watched is self.banner and event.type() == QEvent.Type.Resize and self.dialogs:
            QTimer.singleShot(0, self._place_dialogs_again)
        return False

    def _place_dialogs_again(self) -> None:
        banner = QRect(self.banner.mapToGlobal(QPoint(0, 0)), self.banner.size())
        for dialog in self.dialogs:
            if dialog.frameGeometry().intersects(banner):
                self._place(dialog)

    def _place(self, dialog: QDialog) -> None:
        """Below the live banner, over the left of the tab: the running line stays readable."""
        self.layout().activate()  # the banner where it is now (a new verdict's style may resize it)
        top_left = self.mapToGlobal(self.rect().topLeft())
        below = self.banner.mapToGlobal(self.banner.rect().bottomLeft()).y() + 8
        bottom = self.mapToGlobal(self.rect().bottomLeft()).y()
        frame = dialog.frameGeometry().height() - dialog.geometry().height()  # the title bar, when there is one
        dialog.resize(min(760, max(420, int(self.width() * 0.55))), max(300, min(720, bottom - below - frame)))
        dialog.move(top_left.x(), below)

    def _paint(self) -> None:
        self._paint_pending = False
        outcome, shown = self._newest
        record, result = outcome.record, outcome.result
        self.painted += 1
        self._last = record
        self._show_banner()
        self.drift.setText("Unlike the good images: " + " ".join(outcome.drift.values()) + f" {ADVICE}"
                           if outcome.drift else "")
        self.drift.setVisible(bool(outcome.drift))
        self.part_buttons.set_record(record)
        self._show_part()
        if result is None:
            self.scale.set_threshold(None)

    def _show_part(self) -> None:
        """The newest part (none: an empty view) with the heatmap chosen, the bank's or, with defect
        heads, the classifier's; under the verdict, what the heads found and what was accepted."""
        outcome, shown = self._newest or (None, None)
        result = outcome.result if outcome is not None else None
        text = "" if result is None else services.findings_text(result, self.session.model)
        self.findings.setText(text)
        self.findings.setVisible(bool(text))
        if result is None:
            self.view.display(None)
            return
        image, boxes, accepted, heat, activation = shown  # made ready to paint in the worker (_shown)
        labels = [services.area_text(r) for r in result.regions + result.accepted] if text else []
        self.view.display(image, heat, heat_range(result.threshold)[1], boxes, accepted=accepted, labels=labels,
                          activation=activation)
        self._show_scale()

    def _show_scale(self) -> None:
        """The heat scale of the map on screen: the classifier's probability, or the part's threshold."""
        result = self._newest[0].result if self._newest is not None else None
        if result is not None:
            self.scale.set_threshold(*((0.5, "probability") if self.view.classifier_shown else (result.threshold,)))

    def banner_state(self) -> str:
        return self.banner.property("verdict")

    def _show_banner(self) -> None:
        session = self.session
        if session.product is None:
            idle = "Create a product and train it to start."
        elif session.model is None:
            idle = f"'{session.product}' is not trained: train it before starting the line."
        else:
            idle = "Press Start (F5) to inspect."
        last = self._last
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(last.time)).total_seconds() if last else 0.0
        state, word, detail = banner_text(self.running, *self._source_state, last, max(0.0, age),
                                          self.stale.value(), idle)
        if state != self.banner.property("verdict"):
            self.banner.setProperty("verdict", state)
            for widget in (self.banner, self.verdict, self.detail):  # restyled for the new state
                widget.style().unpolish(widget)
                widget.style().polish(widget)
        self.verdict.setText(word)
        self.detail.setText(detail)
        if session.shipper is not None:
            self.plant.setVisible(True)
            self.plant.setText(session.shipper.status().describe())

    # ---- the shift --------------------------------------------------------------------------
    def _model_changed(self) -> None:
        if self.session.product != self._product:  # another product: nothing of the last one stays
            self._product = self.session.product
            self._last = None
            self._newest = None
            self._show_part()
            self.drift.hide()
            self.part_buttons.set_record(None)
            self.load_shift()
        if self._newest is None:  # nothing painted: the scale is the current model's
            self.scale.set_threshold(self.session.model.threshold if self.session.model else None)
        self._update_buttons()
        self._show_banner()

    def load_shift(self) -> None:
        """Counters and NG parts of the current product since the start of the shift, from the log."""
        product, since = self.session.product, self.session.shift_start()
        self.shift_since.setText(f"since {local_time(since, '%a %H:%M')}")
        self.counts.clear()
        self.ng_strip.clear()
        self._ng_query += 1
        if product is None:
            self._show_counts()
            return
        summary = self.session.store.summary(product, since)
        self.counts.update({"inspected": summary["total"], "OK": summary["OK"], "NG": summary["NG"],
                            "ERROR": summary["ERROR"]})
        self._show_counts()
        number = self._ng_query
        worker = Worker(_logged_ng_parts, self.session.store, product, since)
        worker.returned.connect(lambda parts: number == self._ng_query and self._ng_loaded(parts))
        worker.errored.connect(self.session.error)
        worker.start()

    def _ng_loaded(self, parts: list) -> None:
        for record, thumb in reversed(parts):  # oldest first: the strip puts the newest in front
            self._add_ng(record, np.full((THUMB, THUMB, 3), 90, np.uint8) if thumb is None else thumb)

    def _show_counts(self) -> None:
        for key in ("inspected", "OK", "NG", "ERROR"):
            self.counter_labels[key].setText(str(self.counts[key]))
        rate = yield_rate(self.counts["OK"], self.counts["NG"])
        self.counter_labels["yield"].setText("–" if rate is None else f"{100 * rate:.1f} %")

    def _ask_new_shift(self) -> None:
        if QMessageBox.question(self, "New shift", "Start a new shift now? The counters start again from "
                                "zero; the log keeps every verdict.") == QMessageBox.StandardButton.Yes:
            self.new_shift()

    def new_shift(self) -> None:
        self.session.new_shift()
        self.session.info(f"New shift started at {local_time(self.session.shift_start(), '%H:%M:%S')}.")
        self.load_shift()

    def _show_line_io(self) -> None:
        """Whether the PLC and the broker are connected (shown while the line runs with them)."""
        self.line_io_status.setVisible(self.io is not None)
        if self.io is not None:
            self.line_io_status.setText(" · ".join(self.io.status()))

    def _update_buttons(self) -> None:
        running = self._line is not None
        self.start.setEnabled(self.session.model is not None or running)
        self.start.setText("Stop" if running else "Start")
        self.start.setIcon(icon("stop" if running else "start"))
        self.snap_button.setEnabled(self._snap is not None)
        for control in (self.pages, self.source, self.options_button):
            control.setEnabled(not running)
        if running:
            self.options.hide()
        self._options_changed()
