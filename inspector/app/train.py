"""Train tab: the folder of good images, the training settings, Start/Cancel and progress."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from .. import services
from ..changes import KINDS, Changes
from ..core.backbones import BACKBONES
from ..core.features import REFERENCE_SIDE, default_defect_size, find_graph
from ..core.model import Settings, describe_scale
from ..core.training import MIN_GOOD_IMAGES
from ..data.images import list_images, load_image
from ..errors import Cancelled, ImageError, describe
from .session import Session, settings
from .views import (FolderField, ProgressPanel, Thumbnails, duration, icon, local_time, lock_note, show_lock,
                    splitter, thumbnail)
from .worker import Worker

SAMPLERS = {"greedy": "Greedy coreset (best coverage)", "random": "Random (fastest)"}
MAX_THUMBNAILS = 60
MAX_LISTED = 5  # unreadable files named in the warning
TRAINING_STEPS = 3  # extracting features, sampling the memory bank, calibrating (then scoring known defects)


def _scan(job: Worker, folder: str) -> None:
    """Check every image of the folder; thumbnails of the first ones."""
    paths = list_images(folder)
    job.report(("found", len(paths)))
    for i, path in enumerate(paths):
        if job.cancel.is_set():
            return
        try:
            image = load_image(path)
        except ImageError as exc:
            job.report(("unreadable", path, str(exc)))
        else:
            job.report(("readable", path, thumbnail(image) if i < MAX_THUMBNAILS else None, image.shape[:2]))


def _train(job: Worker, product: str, folder: str, options: Settings, changes: Changes):
    """Train and save (a failed or cancelled training saves nothing); then score the product's
    known defects, if any, so that the end of the training says the escapes too."""
    model, good = changes.train(product, folder, options, progress=lambda *step: job.report(step), cancel=job.cancel)
    known = services.known_defects(changes.models_dir, product)
    defects = None if known is None else services.score_defects(
        model, known, lambda done, total, *_: job.report(("scoring known defects", done, total)), job.cancel)
    return model, good, defects


def _capture_and_train(job: Worker, product: str, source: str, frames: int, folder: str, options: Settings,
                       changes: Changes):
    """Capture frames of good parts from the camera into the product's taught images, then
    train on them (and on the folder of good images, when one is chosen)."""
    captured = services.capture_good_frames(source, frames, services.taught_dir(changes.models_dir, product),
                                            progress=lambda *step: job.report(step), cancel=job.cancel)
    return _train(job, product, folder or captured, options, changes)


def _learn(job: Worker, product: str, good_folder: str | None, defects_folder: str, min_defect_area: float,
           mm_per_px: float | None, changes: Changes):
    """Train the defect heads on known defects and save the new version (Changes.learn_defects)."""
    return changes.learn_defects(product, good_folder, defects_folder, min_defect_area, mm_per_px,
                                 progress=lambda *step: job.report(step), cancel=job.cancel)


def percent_box(value: float = 1.0) -> QDoubleSpinBox:
    """The sampling ratio, shown in percent of the patch features kept in the memory bank."""
    box = QDoubleSpinBox()
    box.setRange(0.1, 100.0)
    box.setDecimals(1)
    box.setSingleStep(0.5)
    box.setSuffix(" %")
    box.setValue(value)
    box.setToolTip("Share of the good images' patch features kept in the memory bank. "
                   "More is slower and slightly more accurate.")
    return box


class TrainTab(QWidget):
    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self._scanner: Worker | None = None
        self._trainer: Worker | None = None
        self._found = self._readable = 0
        self._unreadable: list[str] = []
        self._shapes: list[tuple[int, int]] = []
        self._shown_product: str | None = None
        self._trained_version: tuple[str, int] | None = None  # what the message after a training is about

        self.folder = FolderField("Folder of good images", "Choose the folder of good images")
        self.folder.chosen.connect(self._folder_chosen)
        self.count = QLabel("Choose the folder of good images of this product.")
        self.count.setWordWrap(True)
        self.taught = QLabel()  # the taught good parts every training uses too
        self.taught.setWordWrap(True)
        self.taught.hide()
        self.warning = QLabel()
        self.warning.setObjectName("warning")
        self.warning.setWordWrap(True)
        self.warning.hide()

        self.camera = QLineEdit()  # teach from the camera the line inspects with
        self.camera.setPlaceholderText("Camera index, stream URL or video file")
        self.camera.textChanged.connect(lambda _: self._update_buttons())
        self.frames = QSpinBox()
        self.frames.setRange(MIN_GOOD_IMAGES, 1000)
        self.frames.setValue(30)
        self.frames.setSuffix(" frames")
        self.capture = QPushButton(icon("start"), "Capture good parts and train")
        self.capture.setToolTip("Take this many frames of good parts from the camera (kept with the product's "
                                "taught images), then train on them and on the folder above, if one is chosen")
        self.capture.clicked.connect(self.capture_and_train)

        self.backbone = QComboBox()
        for name, spec in BACKBONES.items():
            self.backbone.addItem(spec.description, name)
        self.defect_size = QDoubleSpinBox()
        self.defect_size.setRange(0.0, 10_000.0)
        self.defect_size.setDecimals(1)
        self.defect_size.setSuffix(" px")
        self.defect_size.setSpecialValueText("Automatic")
        self.defect_size.setToolTip("The smallest defect to find, in the images' pixels. It decides the scale at "
                                    "which the images are inspected (their aspect ratio is kept; large images "
                                    "in tiles). Smaller finds smaller defects and takes longer.")
        self.defect_size.valueChanged.connect(lambda _: self._show_scale())
        self.scale = QLabel()
        self.scale.setWordWrap(True)
        self.sampler = QComboBox()
        for name, text in SAMPLERS.items():
            self.sampler.addItem(text, name)
        self.ratio = percent_box()

        self.start = QPushButton(icon("start"), KINDS["train"].label)
        self.start.setObjectName("primary")
        self.start.clicked.connect(self.start_training)
        self.cancel = QPushButton(icon("stop"), "Cancel")
        self.cancel.clicked.connect(self.cancel_training)
        self.locked = lock_note()  # why Start is greyed out, in words
        self.defects = FolderField("Folder of known defects, a subfolder per kind", "Choose the folder of known defects")
        self.defects.setToolTip("Images of known defects, one subfolder per kind (a 'good' subfolder is left out); "
                                "masks as NAME_mask.png beside each image or in ../ground_truth/KIND/")
        self.defects.chosen.connect(lambda _: self._update_buttons())
        self.mm_per_px = QDoubleSpinBox()
        self.mm_per_px.setRange(0.0, 100.0)
        self.mm_per_px.setDecimals(4)
        self.mm_per_px.setSuffix(" mm per px")
        self.mm_per_px.setSpecialValueText("No scale (areas in px)")
        self.min_area = QDoubleSpinBox()
        self.min_area.setRange(0.0, 1e9)
        self.min_area.setDecimals(2)
        self.min_area.setSuffix(" px")
        self.min_area.setSpecialValueText("None: every defect rejects")
        self.min_area.setToolTip("A region smaller than this is accepted: the part stays OK")
        self.mm_per_px.valueChanged.connect(lambda v: self.min_area.setSuffix(" mm²" if v else " px"))
        self.learn = QPushButton(icon("start"), KINDS["learn"].label)
        self.learn.setToolTip("Train a defect classifier and a segmentation head (from the masks) on the known "
                              "defects and the good images above; saved as a new version")
        self.learn.clicked.connect(self.learn_defects)
        self.progress = ProgressPanel()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("summary")

        images = QGroupBox("Good images")
        box = QVBoxLayout(images)
        box.addWidget(self.folder)
        box.addWidget(self.count)
        box.addWidget(self.taught)
        box.addWidget(self.warning)
        camera = QGroupBox("Or from the camera")
        row = QHBoxLayout(camera)
        row.addWidget(self.camera, 1)
        row.addWidget(self.frames)
        row.addWidget(self.capture)
        options = QGroupBox("Settings")
        form = QFormLayout(options)
        form.addRow("Backbone", self.backbone)
        form.addRow("Smallest defect", self.defect_size)
        form.addRow("", self.scale)
        form.addRow("Sampler", self.sampler)
        form.addRow("Sampling ratio", self.ratio)
        known = QGroupBox("Known defects (engineer)")
        form = QFormLayout(known)
        form.addRow(self.defects)
        form.addRow("Scale", self.mm_per_px)
        form.addRow("Accept defects smaller than", self.min_area)
        form.addRow(self.learn)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start, 1)
        buttons.addWidget(self.cancel)
        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addWidget(images)
        column.addWidget(camera)
        column.addWidget(options)
        column.addLayout(buttons)
        column.addWidget(self.locked)
        column.addWidget(known)
        column.addWidget(self.progress)
        column.addWidget(self.summary)
        column.addStretch(1)
        left = QScrollArea()  # taller than a small screen leaves: it scrolls, nothing is squeezed or clipped
        left.setWidget(controls)
        left.setWidgetResizable(True)
        left.setFrameShape(QFrame.Shape.NoFrame)
        left.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left.setMinimumWidth(controls.minimumSizeHint().width() + left.verticalScrollBar().sizeHint().width())

        self.thumbnails = Thumbnails(limit=MAX_THUMBNAILS)
        right = QWidget()
        column = QVBoxLayout(right)
        self.thumbnails_title = QLabel("Good images that will be used")
        self.thumbnails_title.setObjectName("heading")
        column.addWidget(self.thumbnails_title)
        column.addWidget(self.thumbnails, 1)

        split = splitter("train_split", left, right, (380, 900))
        layout = QVBoxLayout(self)
        layout.addWidget(split)

        session.changed.connect(self._product_changed)
        session.user_changed.connect(self._update_buttons)
        session.busy_changed.connect(lambda _: self._update_buttons())
        self._update_buttons()

    # ---- good images -----------------------------------------------------------------
    def _folder_chosen(self, folder: str) -> None:
        if self._scanner is not None:
            self._scanner.stop(wait=False)
            self._scanner = None
        self.thumbnails.clear()
        self.warning.hide()
        self._found = self._readable = 0
        self._unreadable = []
        self._shapes = []
        self._show_scale()
        if self.session.product and folder:
            settings().setValue(f"good_folder/{self.session.product}", folder)
        if not folder:
            self.count.setText("Choose the folder of good images of this product.")
        else:
            self.count.setText("Reading the folder…")
            self._scanner = worker = Worker(_scan, folder)
            worker.yielded.connect(lambda item: self._scanner is worker and self._scanned(item))
            worker.errored.connect(lambda exc: self._scanner is worker and self._scan_done(str(exc)))
            worker.returned.connect(lambda _: self._scanner is worker and self._scan_done())
            worker.start()
        self._update_buttons()

    def _scanned(self, item) -> None:
        kind, *rest = item
        if kind == "found":
            self._found = rest[0]
        elif kind == "unreadable":
            path, reason = rest
            self._unreadable.append(f"{Path(path).name}: {reason}")
        else:
            path, small, shape = rest
            self._readable += 1
            self._shapes.append(shape)
            if small is not None:
                self.thumbnails.add(small, Path(path).name, str(path))
        checked = self._readable + len(self._unreadable)
        self.count.setText(f"Checking images: {checked} of {self._found}…")

    def _scan_done(self, error: str | None = None) -> None:
        self._scanner = None
        if error or not self._found:
            self.count.setText(error or "No image files (.png, .jpg, .bmp, .tif) in this folder.")
            self._update_buttons()
            return
        text = f"{self._readable} good image(s) will be used"
        if self._readable > MAX_THUMBNAILS:
            text += f" (the first {MAX_THUMBNAILS} are shown)"
        self.count.setText(text + ".")
        self._show_scale()
        problems = []
        if self._unreadable:
            problems.append(f"{len(self._unreadable)} file(s) cannot be read and will be skipped:\n"
                            + "\n".join(self._unreadable[:MAX_LISTED])
                            + ("\n…" if len(self._unreadable) > MAX_LISTED else ""))
        if self._readable < MIN_GOOD_IMAGES:
            problems.append(f"At least {MIN_GOOD_IMAGES} good images are needed; 30 or more give a "
                            f"steadier threshold.")
        self.warning.setText("\n".join(problems))
        self.warning.setVisible(bool(problems))
        self._update_buttons()

    # ---- training --------------------------------------------------------------------
    def options(self) -> Settings:
        model = self.session.model
        base = model.settings if model else Settings()
        return replace(base, backbone=self.backbone.currentData(), defect_size=self.defect_size.value() or None,
                       image_size=None, sampler=self.sampler.currentData(),
                       sampling_ratio=self.ratio.value() / 100.0)

    def _show_scale(self) -> None:
        """What the smallest defect means for these images: the automatic value and the scale."""
        chosen = self.defect_size.value() or None
        if not self._shapes:
            self.scale.setText("Automatic: chosen from the good images' sizes." if chosen is None else "")
            return
        auto = default_defect_size(self._shapes)
        size = chosen or auto
        shorter = sorted(min(s) for s in self._shapes)[len(self._shapes) // 2]
        self.scale.setText((f"Automatic: {auto:g} px, " if chosen is None else "")
                           + f"the images' median shorter side of {shorter} px is inspected at "
                           f"{shorter * 8 / size:.0f} px (automatic: {REFERENCE_SIDE} px). "
                           f"A smaller defect size finds smaller defects and takes longer.")

    def start_training(self) -> None:
        if self._may_train(self.start):
            self._run_training(_train, self.folder.path())

    def capture_and_train(self) -> None:
        """Teach from the camera: its frames of good parts, then a training on them."""
        if self._may_train(self.capture):
            self._run_training(_capture_and_train, self.camera.text().strip(), self.frames.value(),
                               self.folder.path())

    def _may_train(self, button: QPushButton, kind: str = "train") -> bool:
        return self.session.allow(kind) and button.isEnabled()

    def _run_training(self, fn, *sources) -> None:
        product, options = self.session.product, self.options()
        steps = TRAINING_STEPS + (services.known_defects(self.session.models_dir, product) is not None)
        if fn is _capture_and_train:
            self.progress.begin(f"Capturing frames of good parts from {sources[0]}…", steps + 1)
        elif find_graph(options.backbone, options.weights) is None:
            self.progress.begin("Preparing the backbone: exporting its graph, once on this machine (about 2 min)…",
                                steps)
        else:
            self.progress.begin("Reading the good images…", steps)
        self._start(lambda result: self._trained(product, *result), fn, product, *sources, options,
                    self.session.changes)

    def learn_defects(self) -> None:
        """Train on known defects: the defect heads on the current model, saved as a new version."""
        if not self._may_train(self.learn, "learn"):
            return
        product = self.session.product
        self.progress.begin("Reading the good images…", 2)
        self._start(lambda model: self._learnt(product, model), _learn, product, self.folder.path() or None,
                    self.defects.path(), self.min_area.value(), self.mm_per_px.value(), self.session.changes)

    def _start(self, done, fn, *args) -> None:
        """Run `fn(job, *args)` as the training under way: its progress shown, `done` with its result."""
        self._trainer = worker = Worker(fn, *args)
        worker.yielded.connect(lambda step: self.progress.step(*step))
        worker.returned.connect(done)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._training_ended)
        self.session.set_busy("training", True)
        worker.start()
        self._update_buttons()

    def cancel_training(self) -> None:
        if self._trainer is not None:
            self._trainer.stop(wait=False)
            self.progress.begin("Cancelling…")

    def _trained(self, product: str, model, good, defects) -> None:
        said = services.trained_text(model, defects)
        self._trained_version = (product, model.version)
        self.progress.finish(f"Trained in {duration(self.progress.elapsed())}: version {model.version} of "
                             f"'{product}' saved. On the line, {said} Check it on the Calibrate tab.")
        if self.session.product == product:
            self.session.set_model(model, good)
        skipped = f" {len(good.skipped)} unreadable file(s) were skipped." if good.skipped else ""
        self.session.info(f"Product '{product}' trained on {model.counts['good_images']} good images (version "
                          f"{model.version}): {said}{skipped}")

    def _learnt(self, product: str, model) -> None:
        said = services.learnt_text(model)
        self._trained_version = (product, model.version)
        self.progress.finish(f"Trained on known defects in {duration(self.progress.elapsed())}. {said}.")
        if self.session.product == product:
            self.session.set_model(model, self.session.good)  # the same memory bank: its good features stay
        self.session.info(f"{said}.")

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.progress.finish("Training cancelled; the previous model is unchanged.")
            self.session.warn("Training cancelled; the previous model is unchanged.")
        else:
            self.progress.finish(f"Training failed; the previous model is unchanged. {describe(exc)}")
            self.session.error(exc)

    def _training_ended(self) -> None:
        self._trainer = None
        self.session.set_busy("training", False)
        self._update_buttons()

    # ---- product -----------------------------------------------------------------------
    def _product_changed(self) -> None:
        session = self.session
        if session.product != self._shown_product:
            self._shown_product = session.product
            folder = settings().value(f"good_folder/{session.product}", "") if session.product else ""
            self.folder.set_path(folder)
        model = session.model
        if self._trained_version is not None and self._trained_version != (
                session.product, model.version if model else None):  # the message is of another version now
            self._trained_version = None
            self.progress.finish("")
        s = model.settings if model else Settings()
        for combo, value in ((self.backbone, s.backbone), (self.sampler, s.sampler)):
            combo.setCurrentIndex(max(0, combo.findData(value)))
        self.defect_size.setValue(s.defect_size or 0.0)
        self.ratio.setValue(s.sampling_ratio * 100.0)
        self.mm_per_px.setValue((model.mm_per_px or 0.0) if model else 0.0)
        self.min_area.setValue(model.min_defect_area if model else 0.0)
        if model is not None:
            c = model.counts
            self.summary.setText(
                f"Current model: version {model.version} of {local_time(model.created, '%Y-%m-%d %H:%M')}, "
                f"{c.get('good_images')} good images; memory bank of {c.get('memory_bank')} patch features; threshold "
                f"{model.threshold:.4g} at tolerance {s.tolerance:g}, set from {c.get('calibration_images')} "
                f"good-image scores ({model.calibration.method}); {describe_scale(s.defect_size, s.image_size)}.")
        elif session.product:
            self.summary.setText(f"'{session.product}' is not trained yet.")
        else:
            self.summary.setText("")
        taught = services.taught_images(session.models_dir, session.product) if session.product else []
        self.taught.setText(f"With them, {len(taught)} taught good image(s) kept with the product, in "
                            f"{taught[0].parent} (delete one there to leave it out)." if taught else "")
        self.taught.setVisible(bool(taught))
        self._update_buttons()

    def _update_buttons(self) -> None:
        training, session = self._trainer is not None, self.session
        self.start.setEnabled(not training and bool(session.product) and bool(self.folder.path())
                              and session.may("train") and not session.line_running)
        reason = session.locked_reason("train", stopped_line=True) if session.product else ""
        show_lock(self.locked, reason)
        self.start.setToolTip(reason or KINDS["train"].label)
        self.capture.setEnabled(not training and bool(session.product) and bool(self.camera.text().strip())
                                and session.may("train") and not session.line_running)
        self.learn.setEnabled(not training and session.model is not None
                              and bool(self.folder.path() or session.model.good_folder) and bool(self.defects.path()) and session.may("train") and not session.line_running)
        self.cancel.setEnabled(training)
        for widget in (self.folder, self.camera, self.frames, self.backbone, self.defect_size, self.sampler,
                       self.ratio, self.defects, self.mm_per_px, self.min_area):
            widget.setEnabled(not training)
