"""Calibrate tab: the held-out good scores (and known defects, read with their subfolders) as
histograms, the threshold as a draggable line tied to the tolerance, the rates it
gives, Apply; and a rebuild of the memory bank at another sampling ratio, from the features
kept from this session's training or else from the good images read again.

Changing the threshold or the bank is an engineer's action; on a running line, the change
shows its predicted false-reject and escape rates and asks to be confirmed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import (QDoubleSpinBox, QFormLayout, QFrame, QGroupBox, QHBoxLayout, QLabel, QPushButton,
                               QScrollArea, QVBoxLayout, QWidget)

from .. import services
from ..changes import KINDS, rebuild_folder
from ..core.model import Model
from ..errors import TrainingError
from .session import Session, confirm_on_running_line, settings
from .train import percent_box
from .views import FolderField, ProgressPanel, duration, icon, lock_note, show_lock, splitter
from .worker import Worker

BINS = 30
GOOD_COLOUR, DEFECT_COLOUR, LINE_COLOUR = "#2e9e4f", "#d83a3a", "#1f4fd1"


def _score_folder(job: Worker, model: Model, folder: str) -> None:
    """Score every image of the folder and its subfolders; reports (done, total, path, score or None, problem)."""
    services.score_defects(model, folder, lambda *item: job.report(item), job.cancel)


def _refit(job: Worker, changes, model: Model, good, ratio: float, images: str | None):
    return changes.rebuild_bank(model.product, ratio, good, images, progress=lambda *step: job.report(step),
                                cancel=job.cancel)


def change_text(model: Model, tolerance: float, defects: services.DefectScores | None) -> str:
    """What a new tolerance does, as the confirmation on a running line says it."""
    old, new = model.threshold, model.calibration.image_threshold(tolerance)
    before, after = services.rates(model, old, defects), services.rates(model, new, defects)
    return (f"Change the tolerance of '{model.product}' from {model.settings.tolerance:g} to {tolerance:g}: threshold "
            f"{old:.4g} → {new:.4g}?\n\n"
            f"Predicted false rejects: {before.false_rejects_text()} → {after.false_rejects_text()}\n"
            f"Predicted escapes: {before.escapes_text()} → {after.escapes_text()}")


class CalibrateTab(QWidget):
    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self._model: Model | None = None
        self._product: str | None = None
        self._defects: services.DefectScores | None = None  # of the folder on screen, as scored so far
        self._moving = False
        self._scorer: Worker | None = None
        self._refitter: Worker | None = None

        self.tolerance = QDoubleSpinBox()
        self.tolerance.setRange(0.0, 100.0)  # below 0 most good parts would be rejected (changes.check_tolerance)
        self.tolerance.setDecimals(2)
        self.tolerance.setSingleStep(0.25)
        self.tolerance.setToolTip("Threshold = median + tolerance × robust spread of the held-out good scores.\n"
                                  "Higher tolerance: fewer false rejects, more escapes.")
        self.tolerance.valueChanged.connect(self._tolerance_changed)
        self.threshold = QLabel("–")
        self.threshold.setObjectName("value")
        self.false_rejects = QLabel()
        self.false_rejects.setWordWrap(True)
        self.false_rejects.setToolTip("Good images of the calibration that would be NG at this threshold")
        self.escapes = QLabel()
        self.escapes.setWordWrap(True)
        self.escapes.setToolTip("Known defect images that would pass as OK at this threshold")
        self.separate = QPushButton("Separating threshold")
        self.separate.setToolTip("Move the threshold to where it best separates the good images from the known "
                                 "defects (fewest false rejects plus escapes), on the good side of the gap; "
                                 "Apply to use it")
        self.proposal = QLabel()  # what the proposed threshold rests on, and a warning when that is little
        self.proposal.setWordWrap(True)
        self.proposal.hide()
        self.separate.clicked.connect(self.use_separating_threshold)
        self.apply = QPushButton(icon("check"), KINDS["tolerance"].label)
        self.apply.setObjectName("primary")
        self.apply.clicked.connect(self.apply_tolerance)
        self.locked = lock_note()

        self.defect_folder = FolderField("Folder of known defect images (optional)",
                                         "Choose a folder of known defect images")
        self.defect_folder.chosen.connect(self.score_defects)
        self.defect_progress = ProgressPanel()

        self.ratio = percent_box()
        self.rebuild = QPushButton(icon("refresh"), KINDS["bank"].label)
        self.rebuild.clicked.connect(self.rebuild_bank)
        self.rebuild_note = QLabel()
        self.rebuild_note.setWordWrap(True)
        self.rebuild_progress = ProgressPanel()

        threshold = QGroupBox("Threshold")
        column = QVBoxLayout(threshold)
        form = QFormLayout()
        form.addRow("Tolerance (spreads)", self.tolerance)
        form.addRow("Threshold", self.threshold)
        column.addLayout(form)
        column.addWidget(self.false_rejects)
        column.addWidget(self.escapes)
        buttons = QHBoxLayout()
        buttons.addWidget(self.separate)
        buttons.addWidget(self.apply, 1)
        column.addLayout(buttons)
        column.addWidget(self.proposal)
        column.addWidget(self.locked)
        defects = QGroupBox("Known defects (subfolders included)")
        column = QVBoxLayout(defects)
        column.addWidget(self.defect_folder)
        column.addWidget(self.defect_progress)
        bank = QGroupBox("Memory bank")
        column = QVBoxLayout(bank)
        row = QHBoxLayout()
        row.addWidget(QLabel("Sampling ratio"))
        row.addWidget(self.ratio, 1)
        column.addLayout(row)
        column.addWidget(self.rebuild)
        column.addWidget(self.rebuild_note)
        column.addWidget(self.rebuild_progress)
        controls = QWidget()
        column = QVBoxLayout(controls)
        for group in (threshold, defects, bank):
            column.addWidget(group)
        column.addStretch(1)
        left = QScrollArea()  # taller than a 1366x768 screen leaves: it scrolls, nothing is squeezed or clipped
        left.setObjectName("calibrate_controls")
        left.setWidget(controls)
        left.setWidgetResizable(True)
        left.setFrameShape(QFrame.Shape.NoFrame)
        left.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left.setMinimumWidth(controls.minimumSizeHint().width() + left.verticalScrollBar().sizeHint().width())

        self.plot = pg.PlotWidget(background="w")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setLabel("bottom", "Anomaly score")
        self.plot.setLabel("left", "Images")
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.good_curve = self._histogram(GOOD_COLOUR)
        self.defect_curve = self._histogram(DEFECT_COLOUR)
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen(LINE_COLOUR, width=3),
                                    hoverPen=pg.mkPen("#f0a000", width=4), label="threshold {value:.4g}",
                                    labelOpts={"position": 0.95, "color": LINE_COLOUR, "fill": (255, 255, 255, 220)})
        self.line.setZValue(10)
        self.line.sigPositionChanged.connect(self._line_moved)
        self.plot.addItem(self.line)
        legend = QLabel(f'<span style="color:{GOOD_COLOUR}">■</span> Good images&nbsp;&nbsp;&nbsp;'
                        f'<span style="color:{DEFECT_COLOUR}">■</span> Known defects&nbsp;&nbsp;&nbsp;'
                        f'<span style="color:{LINE_COLOUR}">┃</span> Threshold')
        legend.setToolTip("Good images: the calibration's, and the good/ subfolder of a known-defects folder")
        self.hint = QLabel("Drag the blue threshold line, or set the tolerance, then Apply.")
        self.hint.setObjectName("hint")
        below = QHBoxLayout()
        below.addWidget(legend)
        below.addStretch(1)
        below.addWidget(self.hint)
        right = QWidget()
        column = QVBoxLayout(right)
        column.addWidget(self.plot, 1)
        column.addLayout(below)

        QVBoxLayout(self).addWidget(splitter("calibrate_split", left, right, (400, 900)))

        session.changed.connect(self._model_changed)
        session.busy_changed.connect(lambda _: self._update_buttons())
        session.user_changed.connect(self._update_buttons)
        self._model_changed()

    def _histogram(self, colour: str):
        brush = pg.mkColor(colour)
        brush.setAlpha(110)
        return self.plot.plot([], [], stepMode="center", fillLevel=0, brush=brush, pen=pg.mkPen(colour, width=2))

    # ---- the threshold ---------------------------------------------------------------
    def _model_changed(self) -> None:
        model = self.session.model
        if self.session.product != self._product:  # another product: its own known defects
            self._product = self.session.product
            self.defect_folder.set_path(self._known_defects(), emit=False)
            self.rebuild_progress.finish("")
        with QSignalBlocker(self.tolerance):
            self.tolerance.setValue(model.settings.tolerance if model else 3.0)
        if model is not self._model:
            self._model = model
            if model is not None:
                self.ratio.setValue(model.settings.sampling_ratio * 100.0)
            self.defect_progress.finish("")
            self.score_defects(self.defect_folder.path())  # again, against the new model
        else:
            self._draw()

    def _draw(self) -> None:
        model = self._model
        self.line.setVisible(model is not None)
        if model is None:
            self.good_curve.setData([], [])
            self.defect_curve.setData([], [])
            self.threshold.setText("–")
            self.false_rejects.setText("Train the product first." if self.session.product else "")
            self.escapes.setText("")
            self._update_buttons()
            return
        defects = self._defects
        good = np.concatenate([model.calibration.image_scores, defects.good_scores if defects else []])
        bad = np.asarray(defects.scores if defects else [], float)
        threshold = model.calibration.image_threshold(self.tolerance.value())
        bins = np.histogram_bin_edges(np.concatenate([good, bad, [threshold]]), BINS)
        highest = 1
        for curve, scores in ((self.good_curve, good), (self.defect_curve, bad)):
            counts = np.histogram(scores, bins)[0] if len(scores) else np.zeros(0)
            curve.setData(bins if len(scores) else [], counts)
            highest = max(highest, int(counts.max()) if len(counts) else 0)
        # the range is the scores', set here: never auto-ranged from 0 or from a stale curve
        width = bins[-1] - bins[0] or 1.0
        self.plot.setXRange(bins[0] - 0.05 * width, bins[-1] + 0.05 * width, padding=0)
        self.plot.setYRange(0, highest * 1.25, padding=0)
        self._show_threshold(threshold)

    def _show_threshold(self, threshold: float) -> None:
        """Line, numbers and rates for a threshold (the tolerance box is set by the caller)."""
        self._moving = True  # not a drag: the line's label still follows, the tolerance box does not
        self.line.setValue(threshold)
        self._moving = False
        self.threshold.setText(f"{threshold:.4g}")
        rates = services.rates(self._model, threshold, self._defects)
        self.false_rejects.setText(f"<b>False rejects:</b> {rates.false_rejects_text()}")
        self.escapes.setText(f"<b>Escapes:</b> {rates.escapes_text()}")
        self._update_buttons()

    def _tolerance_changed(self, tolerance: float) -> None:
        if self._model is not None:
            threshold = self._model.calibration.image_threshold(tolerance)
            low, high = self.plot.getViewBox().viewRange()[0]
            self._show_threshold(threshold)
            if not low <= threshold <= high:
                self._draw()

    def _line_moved(self) -> None:
        if self._model is not None and not self._moving:
            with QSignalBlocker(self.tolerance):
                self.tolerance.setValue(self._model.calibration.tolerance_for(self.line.value()))
            self._show_threshold(self._model.calibration.image_threshold(self.tolerance.value()))

    def apply_tolerance(self) -> None:
        model, tolerance, session = self._model, self.tolerance.value(), self.session
        if model is None or not session.allow("tolerance"):
            return
        if not confirm_on_running_line(self, session, "Tolerance", change_text(model, tolerance, self._defects)):
            return
        changes = session.changes
        worker = Worker(lambda job: changes.set_tolerance(model.product, tolerance, expected_version=model.version))
        worker.returned.connect(lambda new: self._applied(model, new))
        worker.errored.connect(self.session.error)
        worker.start()
        self.apply.setEnabled(False)

    def _applied(self, old: Model, model: Model) -> None:
        self.session.info(f"Tolerance {model.settings.tolerance:g} applied to '{model.product}': "
                          f"threshold {model.threshold:.4g} (model version {model.version}).")
        if self.session.model is old:
            self.session.set_model(model, self.session.good)

    def use_separating_threshold(self) -> None:
        """The threshold that best separates the good images from the known defects (then
        Apply), with what it rests on and a warning when that is little."""
        if self._model is not None and self._defects is not None and self._defects.scores:
            proposal = services.propose_threshold(self._model, self._defects)
            self.tolerance.setValue(proposal.tolerance)
            warning = proposal.warning
            self.proposal.setObjectName("warning" if warning else "")
            self.proposal.style().unpolish(self.proposal)
            self.proposal.style().polish(self.proposal)
            self.proposal.setText(f"Proposed: {proposal.describe()}." + (f"\n{warning}" if warning else ""))
            self.proposal.show()

    # ---- known defects -------------------------------------------------------------------
    def _known_defects(self) -> str:
        """The product's own known defects (parts confirmed as defects), when it has some."""
        if self.session.product is None:
            return ""
        return str(services.known_defects(self.session.models_dir, self.session.product) or "")

    def score_defects(self, folder: str) -> None:
        if self._scorer is not None:
            self._scorer.stop(wait=False)
            self._scorer = None
        self._defects = None
        self.proposal.hide()
        self._draw()  # nothing of an earlier folder or model stays on screen
        if not folder or self._model is None:
            return
        self.defect_progress.begin("Scoring the known defects…")
        self._defects = services.DefectScores(Path(folder))
        self._scorer = worker = Worker(_score_folder, self._model, folder)
        worker.yielded.connect(lambda item: self._scorer is worker and self._scored(*item))
        worker.errored.connect(lambda exc: self._scorer is worker and self._scoring_failed(exc))
        worker.returned.connect(lambda _: self._scorer is worker and self._scored_all(folder))
        worker.start()

    def _scored(self, done: int, total: int, path: Path, score: float | None, problem: str | None) -> None:
        self.defect_progress.step("scoring known defects", done, total)
        if score is None:
            self.session.warn(problem)
        else:
            self._defects.add(path, score)
            self._draw()

    def _scoring_failed(self, exc: BaseException) -> None:
        self._scorer = None
        self.defect_progress.finish(str(exc))

    def _scored_all(self, folder: str) -> None:
        self._scorer = None
        scored = self._defects
        if not scored.scores and not scored.good_scores:
            self.defect_progress.finish(f"No image found in {folder} or its subfolders.")
        else:
            self.defect_progress.finish(f"Scored {scored.describe()}.")
        self._update_buttons()

    # ---- memory bank ---------------------------------------------------------------------
    def _rebuild_source(self) -> tuple[str | None, str]:
        """(the folder to read, or None for the features in memory; what the note says).
        The note says why not when it cannot be rebuilt."""
        good, product = self.session.good, self.session.product
        taught = len(services.taught_images(self.session.models_dir, product, good.paths if good else []))
        taught = f"the {taught} taught good image(s) kept with the product" if taught else ""
        if good is not None:
            return None, ("Re-uses the patch features kept from this session's training or last rebuild"
                          + (f"; reads {taught}." if taught else ": no image is read again."))
        try:  # the folder the model records; for an older model, the Train tab's folder of the product
            folder = rebuild_folder(self._model, settings().value(f"good_folder/{product}", ""))
        except TrainingError as exc:
            return "", str(exc)
        also = f" and {taught}" if taught else ""
        return str(folder), f"Reads the good images of {folder} again{also}."

    def rebuild_bank(self) -> None:
        model, good, session = self._model, self.session.good, self.session
        if model is None or not session.allow("bank"):
            return
        folder, note = self._rebuild_source()
        if folder == "":
            session.warn(note)
            return
        self.rebuild_progress.begin("Rebuilding the memory bank…")
        self._refitter = worker = Worker(_refit, session.changes, model, good, self.ratio.value() / 100.0, folder)
        worker.yielded.connect(lambda step: self.rebuild_progress.step(*step))
        worker.returned.connect(lambda result: self._rebuilt(*result))
        worker.errored.connect(self._rebuild_failed)
        worker.finished.connect(self._rebuild_ended)
        session.set_busy("rebuilding", True)
        worker.start()
        self._update_buttons()

    def _rebuilt(self, model: Model, good) -> None:
        self.rebuild_progress.finish(f"Rebuilt in {duration(self.rebuild_progress.elapsed())}: "
                                     f"{model.counts['memory_bank']} patch features, version {model.version}.")
        self.session.info(f"Memory bank of '{model.product}' rebuilt at sampling ratio "
                          f"{model.settings.sampling_ratio:.1%}; threshold {model.threshold:.4g}.")
        if self.session.product == model.product:
            self.session.set_model(model, good)

    def _rebuild_failed(self, exc: BaseException) -> None:
        self.rebuild_progress.finish("Rebuild failed; the model is unchanged.")
        self.session.error(exc)

    def _rebuild_ended(self) -> None:
        self._refitter = None
        self.session.set_busy("rebuilding", False)
        self._update_buttons()

    def _update_buttons(self) -> None:
        model, session = self._model, self.session
        engineer = session.may("tolerance")
        show_lock(self.locked, session.locked_reason("tolerance") if model else "")
        self.apply.setEnabled(engineer and model is not None
                              and abs(self.tolerance.value() - model.settings.tolerance) > 1e-9)
        self.tolerance.setEnabled(engineer and model is not None)
        self.separate.setEnabled(engineer and model is not None and self._defects is not None
                                 and bool(self._defects.scores) and self._scorer is None)
        self.line.setMovable(engineer and model is not None)
        self.defect_folder.setEnabled(model is not None)
        folder, note = self._rebuild_source() if model is not None else ("", "")
        can_rebuild = (engineer and model is not None and folder != "" and not session.busy)
        self.rebuild.setEnabled(can_rebuild)
        self.ratio.setEnabled(can_rebuild)
        if model is not None and session.line_running:
            note = "Stop the line to rebuild the memory bank."
        self.rebuild_note.setText(note)
