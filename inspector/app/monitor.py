"""Monitor tab: run the line from a watched folder, a camera (or stream, or video file) or
files opened by hand; show the newest verdict, the shift counters and the latest NG parts.

The line runs in one worker (inspector.station, shared with the CLI); the Station logs every
frame. The GUI paints only the newest outcome: when outcomes arrive faster than it paints,
the older ones are counted but not drawn."""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QFrame, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QPushButton, QSlider, QStackedWidget,
                               QVBoxLayout, QWidget)

from .. import services
from ..core.model import Model
from ..drawing import heat_range, overlay_heatmap
from ..sources.camera import list_cameras
from ..station import Outcome
from ..store.results import ResultStore
from .session import Session, settings
from .teaching import PartButtons
from .views import FolderField, ResultView, Thumbnails, display_map, icon, thumbnail, splitter
from .worker import Worker

SOURCES = {"folder": "Watch folder", "camera": "Camera or video", "file": "Files opened by hand"}
COUNTERS = {"inspected": "Inspected", "OK": "OK", "NG": "NG", "ERROR": "Errors", "yield": "Yield"}
NG_STRIP = 20


def _shown(outcome: Outcome) -> tuple:
    """What the GUI paints of an outcome, made ready in the worker: the small heatmap, and a
    thumbnail with its heatmap for an NG part."""
    result = outcome.result
    if result is None:
        return outcome, None, None
    heat = display_map(result.anomaly_map)
    thumb = None
    if result.verdict == "NG":
        thumb = overlay_heatmap(thumbnail(outcome.image), heat, *heat_range(result.threshold))
    return outcome, heat, thumb


def _run_line(job: Worker, models_dir: Path, model: Model, store: ResultStore, kind: str, target,
              sort_files: bool, archive_dir: str | None, snap: threading.Event | None) -> None:
    services.run_line(models_dir, store, model.product, kind, target, job.cancel,
                      lambda outcome: job.report(("outcome", *_shown(outcome))),
                      lambda level, text: job.report((level, text)),
                      sort_files, archive_dir, snap, model=model)


class MonitorTab(QWidget):
    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self._line: Worker | None = None
        self._snap: threading.Event | None = None
        self._newest: tuple | None = None
        self._paint_pending = False
        self._cameras_listed = False
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
        self.camera.setToolTip("A camera index (0, 1, …), a stream URL (rtsp://…) or a video file")
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

        self.sort_files = QCheckBox("Sort files into OK / NG folders")
        self.archive = QCheckBox("Archive heatmap overlays")
        self.archive_dir = FolderField("Archive folder", "Choose the archive folder")
        self.archive_dir.edit.setPlaceholderText(str(self._default_archive()))

        self.start = QPushButton(icon("start"), "Start")
        self.start.setObjectName("primary")
        self.start.setToolTip("Start or stop the line (F5)")
        self.start.clicked.connect(self.start_stop)
        self.snap_button = QPushButton(icon("snap"), "Snap")
        self.snap_button.setToolTip("Inspect the next camera frame (F6 or Space)")
        self.snap_button.clicked.connect(self.snap)

        self.counter_labels = {}
        shift = QGroupBox("This shift")
        grid = QGridLayout(shift)
        for i, (key, text) in enumerate(COUNTERS.items()):
            value = QLabel("0")
            value.setObjectName(f"count_{key}")
            value.setProperty("counter", True)
            value.setAlignment(Qt.AlignmentFlag.AlignCenter)
            title = QLabel(text)
            title.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(value, 0, i)
            grid.addWidget(title, 1, i)
            self.counter_labels[key] = value
        reset = QPushButton("New shift")
        reset.setToolTip("Set the counters back to zero")
        reset.clicked.connect(self.reset_counters)
        grid.addWidget(reset, 2, 0, 1, len(COUNTERS))

        source = QGroupBox("Source")
        form = QFormLayout(source)
        form.addRow(self.source)
        form.addRow(self.pages)
        options = QGroupBox("Options")
        column = QVBoxLayout(options)
        column.addWidget(self.sort_files)
        column.addWidget(self.archive)
        column.addWidget(self.archive_dir)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start, 1)
        buttons.addWidget(self.snap_button)
        left = QWidget()
        column = QVBoxLayout(left)
        column.addWidget(source)
        column.addWidget(options)
        column.addLayout(buttons)
        column.addWidget(shift)
        column.addStretch(1)

        # ---- the newest verdict
        self.banner = QFrame()
        self.banner.setObjectName("banner")
        self.verdict = QLabel("–")
        self.verdict.setObjectName("verdict")
        self.detail = QLabel("Start the line to inspect.")
        self.detail.setObjectName("detail")
        self.detail.setWordWrap(True)
        row = QHBoxLayout(self.banner)
        row.addWidget(self.verdict)
        row.addWidget(self.detail, 1)
        self.view = ResultView()
        self.heat = QCheckBox("Heatmap")
        self.heat.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setMaximumWidth(220)
        for control in (self.heat.toggled, self.opacity.valueChanged):
            control.connect(lambda _: self.view.set_heat(self.heat.isChecked(), self.opacity.value() / 100))
        controls = QHBoxLayout()
        controls.addWidget(self.heat)
        controls.addWidget(QLabel("Opacity"))
        controls.addWidget(self.opacity)
        controls.addStretch(1)
        self.ng_strip = Thumbnails(size=72, limit=NG_STRIP, newest_first=True, wrap=False)
        self.ng_strip.setFixedHeight(118)
        self.ng_strip.itemActivated.connect(lambda item: self.session.info(item.toolTip()))
        right = QWidget()
        column = QVBoxLayout(right)
        column.addWidget(self.banner)
        column.addWidget(self.view, 1)
        column.addLayout(controls)
        self.part_buttons = PartButtons(session)
        column.addWidget(self.part_buttons)
        title = QLabel("Latest NG parts")
        title.setObjectName("heading")
        column.addWidget(title)
        column.addWidget(self.ng_strip)

        QVBoxLayout(self).addWidget(splitter("monitor_split", left, right, (360, 920)))

        self._restore()
        self._set_banner(None)
        session.changed.connect(self._update_buttons)
        self._update_buttons()

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
        self._source_changed()

    def _remember(self) -> None:
        s = settings()
        for key, value in (("source", self.source.currentData()), ("folder", self.folder.path()),
                           ("camera", self.camera.currentText()), ("sort_files", int(self.sort_files.isChecked())),
                           ("archive", int(self.archive.isChecked())), ("archive_dir", self.archive_dir.path())):
            s.setValue(f"monitor/{key}", value)

    def _default_archive(self) -> Path:
        return self.session.models_dir.resolve().parent / "archive"

    def _source_changed(self) -> None:
        self.pages.setCurrentIndex(self.source.currentIndex())
        if self.source.currentData() == "camera" and not self._cameras_listed:
            self.find_cameras()
        self._update_buttons()

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

    def run(self, kind: str, target) -> None:
        """Start the line: kind 'folder' (a folder), 'camera' (index, URL or video file) or
        'file' (a list of files)."""
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
        archive = (self.archive_dir.path() or str(self._default_archive())) if self.archive.isChecked() else None
        self._snap = threading.Event() if kind == "camera" and self.snap_only.isChecked() else None
        self._line = worker = Worker(_run_line, self.session.models_dir, model, self.session.store, kind, target,
                                     self.sort_files.isChecked(), archive, self._snap)
        worker.yielded.connect(self._reported)
        worker.errored.connect(self.session.error)
        worker.finished.connect(self._stopped)
        self.session.set_busy("monitoring", True)
        worker.start()
        self.session.info(f"Line started for '{model.product}' ({SOURCES[kind].lower()}).")
        self._update_buttons()

    def stop(self) -> None:
        if self._line is not None:
            self._line.stop(wait=False)  # the current item finishes and is logged
            self.start.setEnabled(False)
            self.start.setText("Stopping…")

    def snap(self) -> None:
        if self._snap is not None:
            self._snap.set()

    def _stopped(self) -> None:
        self._line, self._snap = None, None
        self.session.set_busy("monitoring", False)
        self.session.info("Line stopped.")
        self._update_buttons()

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
        if kind == "info":
            self.session.info(item[1])
        elif kind == "warning":
            self.session.warn(item[1])
        elif kind == "error":
            self.session.error(item[1])
        else:
            self._count(*item[1:])

    def _count(self, outcome: Outcome, heat, thumb) -> None:
        record = outcome.record
        self.counts["inspected"] += 1
        self.counts[record.verdict] += 1
        name = Path(record.image_path).name if record.image_path else "frame"
        if record.verdict == "ERROR":
            self.session.error(f"{name}: {record.error}")
        if outcome.log_error:
            self.session.warn(outcome.log_error)
        if thumb is not None:
            self.ng_strip.add(thumb, f"{record.score:.3g}",
                              f"NG {name}, score {record.score:.4g}, {record.time[11:19]} UTC")
        self._show_counts()
        self._newest = (outcome, heat)
        if not self._paint_pending:  # paint once the queued outcomes are counted: only the newest
            self._paint_pending = True
            QTimer.singleShot(0, self._paint)

    def _paint(self) -> None:
        self._paint_pending = False
        outcome, heat = self._newest
        record, result = outcome.record, outcome.result
        name = record.image_path or "frame"
        self.painted += 1
        self._set_banner(record)
        self.part_buttons.set_record(record)
        if result is None:
            self.view.display(None, caption=f"{Path(name).name}: {record.error}")
        else:
            boxes = [(r.x, r.y, r.w, r.h) for r in result.regions]
            self.view.display(outcome.image, heat, heat_range(result.threshold)[1], boxes, caption=name)

    def _set_banner(self, record) -> None:
        verdict = record.verdict if record else "none"
        self.banner.setProperty("verdict", verdict)
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)
        self.verdict.setText(record.verdict if record else "–")
        if record is None:
            self.detail.setText("Start the line to inspect.")
        elif record.verdict == "ERROR":
            self.detail.setText(record.error or "")
        else:
            self.detail.setText(f"Score {record.score:.4g}   Threshold {record.threshold:.4g}\n"
                                f"Latency {record.latency_ms:.0f} ms")

    def _show_counts(self) -> None:
        judged = self.counts["OK"] + self.counts["NG"]
        for key in ("inspected", "OK", "NG", "ERROR"):
            self.counter_labels[key].setText(str(self.counts[key]))
        self.counter_labels["yield"].setText(f"{100.0 * self.counts['OK'] / judged:.1f} %" if judged else "–")

    def reset_counters(self) -> None:
        self.counts.clear()
        self.ng_strip.clear()
        self._show_counts()

    def _update_buttons(self) -> None:
        running = self._line is not None
        self.start.setEnabled(self.session.model is not None or running)
        self.start.setText("Stop" if running else "Start")
        self.start.setIcon(icon("stop" if running else "start"))
        self.start.setVisible(running or self.source.currentData() != "file")
        self.snap_button.setEnabled(self._snap is not None)
        self.pages.setEnabled(not running)
        self.source.setEnabled(not running)
        for widget in (self.sort_files, self.archive, self.archive_dir):
            widget.setEnabled(not running)
