"""Calibrate tab: the held-out good scores (and known defects) as histograms, the threshold as
a draggable line tied to the sensitivity (sigma), the rates it gives, Apply; and a rebuild of
the memory bank at another sampling ratio from the features kept in memory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSignalBlocker
from PySide6.QtWidgets import (QDoubleSpinBox, QFormLayout, QGroupBox, QLabel, QPushButton,
                               QVBoxLayout, QWidget)

from .. import services
from ..core.model import Model
from .session import Session
from .train import percent_box
from .views import FolderField, ProgressPanel, icon, splitter
from .worker import Worker

BINS = 30
GOOD_COLOUR, DEFECT_COLOUR, LINE_COLOUR = "#2e9e4f", "#d83a3a", "#1f4fd1"


def _score_folder(job: Worker, model: Model, folder: str) -> None:
    """Score every image of the folder and its subfolders; reports (done, total, score or None, problem)."""
    services.score_defects(model, folder, lambda done, total, path, score, problem:
                           job.report((done, total, score, problem)), job.cancel)


def _refit(job: Worker, model: Model, good, ratio: float, models_dir: Path, store) -> Model:
    new, _ = services.rebuild_bank(models_dir, store, model.product, ratio, good,
                                   progress=lambda *step: job.report(step), cancel=job.cancel)
    return new


class CalibrateTab(QWidget):
    def __init__(self, session: Session):
        super().__init__()
        self.session = session
        self._model: Model | None = None
        self._product: str | None = None
        self._defects: list[float] = []
        self._moving = False
        self._scorer: Worker | None = None
        self._refitter: Worker | None = None

        self.sigma = QDoubleSpinBox()
        self.sigma.setRange(-10.0, 100.0)
        self.sigma.setDecimals(2)
        self.sigma.setSingleStep(0.25)
        self.sigma.setToolTip("Threshold = mean + sigma × spread of the held-out good scores.\n"
                              "Higher sigma: fewer false rejects, more escapes.")
        self.sigma.valueChanged.connect(self._sigma_changed)
        self.threshold = QLabel("–")
        self.threshold.setObjectName("value")
        self.false_rejects = QLabel()
        self.false_rejects.setToolTip("Good images of the calibration that would be NG at this threshold")
        self.escapes = QLabel()
        self.escapes.setToolTip("Known defect images that would pass as OK at this threshold")
        self.apply = QPushButton(icon("check"), "Apply sensitivity")
        self.apply.setObjectName("primary")
        self.apply.clicked.connect(self.apply_sigma)

        self.defect_folder = FolderField("Folder of known defect images (optional)",
                                         "Choose a folder of known defect images")
        self.defect_folder.chosen.connect(self.score_defects)
        self.defect_progress = ProgressPanel()

        self.ratio = percent_box()
        self.rebuild = QPushButton(icon("refresh"), "Rebuild memory bank")
        self.rebuild.clicked.connect(self.rebuild_bank)
        self.rebuild_note = QLabel()
        self.rebuild_note.setWordWrap(True)
        self.rebuild_progress = ProgressPanel()

        threshold = QGroupBox("Threshold")
        column = QVBoxLayout(threshold)
        form = QFormLayout()
        form.addRow("Sensitivity (sigma)", self.sigma)
        form.addRow("Threshold", self.threshold)
        column.addLayout(form)
        column.addWidget(self.false_rejects)
        column.addWidget(self.escapes)
        column.addWidget(self.apply)
        defects = QGroupBox("Known defects")
        column = QVBoxLayout(defects)
        column.addWidget(self.defect_folder)
        column.addWidget(self.defect_progress)
        bank = QGroupBox("Memory bank")
        form2 = QFormLayout(bank)
        form2.addRow("Sampling ratio", self.ratio)
        form2.addRow(self.rebuild)
        form2.addRow(self.rebuild_note)
        form2.addRow(self.rebuild_progress)
        left = QWidget()
        column = QVBoxLayout(left)
        for group in (threshold, defects, bank):
            column.addWidget(group)
        column.addStretch(1)

        self.plot = pg.PlotWidget(background="w")
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "Anomaly score")
        self.plot.setLabel("left", "Images")
        self.plot.showGrid(x=True, y=True, alpha=0.15)
        self.plot.addLegend(offset=(-10, 10))
        self.good_curve = self._histogram(GOOD_COLOUR, "Good images (calibration)")
        self.defect_curve = self._histogram(DEFECT_COLOUR, "Known defects")
        self.line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen(LINE_COLOUR, width=3),
                                    hoverPen=pg.mkPen("#f0a000", width=4), label="threshold {value:.4g}",
                                    labelOpts={"position": 0.92, "color": LINE_COLOUR, "fill": (255, 255, 255, 220),
                                               "movable": True})
        self.line.setZValue(10)
        self.line.sigPositionChanged.connect(self._line_moved)
        self.plot.addItem(self.line)
        self.hint = QLabel("Drag the blue threshold line, or set the sensitivity, then Apply.")
        self.hint.setObjectName("hint")
        right = QWidget()
        column = QVBoxLayout(right)
        column.addWidget(self.plot, 1)
        column.addWidget(self.hint)

        QVBoxLayout(self).addWidget(splitter("calibrate_split", left, right, (380, 900)))

        session.changed.connect(self._model_changed)
        session.busy_changed.connect(lambda _: self._update_buttons())
        self._model_changed()

    def _histogram(self, colour: str, name: str):
        brush = pg.mkColor(colour)
        brush.setAlpha(110)
        return self.plot.plot([], [], stepMode="center", fillLevel=0, brush=brush,
                              pen=pg.mkPen(colour, width=2), name=name)

    # ---- the threshold ---------------------------------------------------------------
    def _model_changed(self) -> None:
        model = self.session.model
        if self.session.product != self._product:
            self._product = self.session.product
            self.defect_folder.set_path("", emit=False)
        with QSignalBlocker(self.sigma):
            self.sigma.setValue(model.settings.sigma if model else 3.0)
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
        good = np.asarray(model.calibration.image_scores, float)
        threshold = model.calibration.image_threshold(self.sigma.value())
        bins = np.histogram_bin_edges(np.concatenate([good, self._defects, [threshold]]), BINS)
        for curve, scores in ((self.good_curve, good), (self.defect_curve, self._defects)):
            counts = np.histogram(scores, bins)[0] if len(scores) else []
            curve.setData(bins if len(scores) else [], counts)
        self.plot.getViewBox().autoRange(padding=0.05)
        self._show_threshold(threshold)

    def _show_threshold(self, threshold: float) -> None:
        """Line, numbers and rates for a threshold (the sigma box is set by the caller)."""
        self._moving = True  # not a drag: the line's label still follows, the sigma box does not
        self.line.setValue(threshold)
        self._moving = False
        good = np.asarray(self._model.calibration.image_scores, float)
        self.threshold.setText(f"{threshold:.4g}")
        rejected = int((good >= threshold).sum())
        self.false_rejects.setText(f"<b>False rejects:</b> {rejected} of {len(good)} good images "
                                   f"({100.0 * rejected / len(good):.1f} %)")
        if self._defects:
            escaped = int((np.asarray(self._defects) < threshold).sum())
            self.escapes.setText(f"<b>Escapes:</b> {escaped} of {len(self._defects)} known defects "
                                 f"({100.0 * escaped / len(self._defects):.1f} %)")
        else:
            self.escapes.setText("<b>Escapes:</b> give a folder of known defects")
        self._update_buttons()

    def _sigma_changed(self, sigma: float) -> None:
        if self._model is not None:
            threshold = self._model.calibration.image_threshold(sigma)
            low, high = self.plot.getViewBox().viewRange()[0]
            self._show_threshold(threshold)
            if not low <= threshold <= high:
                self._draw()

    def _line_moved(self) -> None:
        if self._model is not None and not self._moving:
            with QSignalBlocker(self.sigma):
                self.sigma.setValue(self._model.calibration.sigma_for(self.line.value()))
            self._show_threshold(self._model.calibration.image_threshold(self.sigma.value()))

    def apply_sigma(self) -> None:
        model, sigma, session = self._model, self.sigma.value(), self.session
        worker = Worker(lambda job: services.set_sensitivity(session.models_dir, session.store, model.product,
                                                             sigma, expected_version=model.version))
        worker.returned.connect(lambda new: self._applied(model, new))
        worker.errored.connect(self.session.error)
        worker.start()
        self.apply.setEnabled(False)

    def _applied(self, old: Model, model: Model) -> None:
        self.session.info(f"Sensitivity {model.settings.sigma:g} applied to '{model.product}': "
                          f"threshold {model.threshold:.4g} (model version {model.version}).")
        if self.session.model is old:
            self.session.set_model(model, self.session.good)

    # ---- known defects -------------------------------------------------------------------
    def score_defects(self, folder: str) -> None:
        if self._scorer is not None:
            self._scorer.stop(wait=False)
            self._scorer = None
        self._defects = []
        if not folder or self._model is None:
            self._draw()
            return
        self.defect_progress.begin("Scoring the known defects…")
        self._scorer = worker = Worker(_score_folder, self._model, folder)
        worker.yielded.connect(lambda item: self._scorer is worker and self._scored(*item))
        worker.errored.connect(lambda exc: self._scorer is worker and self._scoring_failed(exc))
        worker.returned.connect(lambda _: self._scorer is worker and self._scored_all())
        worker.start()

    def _scored(self, done: int, total: int, score: float | None, problem: str | None) -> None:
        self.defect_progress.step("scoring known defects", done, total)
        if score is None:
            self.session.warn(problem)
        else:
            self._defects.append(score)
            self._draw()

    def _scoring_failed(self, exc: BaseException) -> None:
        self._scorer = None
        self.defect_progress.finish(str(exc))

    def _scored_all(self) -> None:
        self._scorer = None
        self.defect_progress.finish(f"{len(self._defects)} known defect image(s) scored.")

    # ---- memory bank ---------------------------------------------------------------------
    def rebuild_bank(self) -> None:
        model, good = self._model, self.session.good
        self.rebuild_progress.begin("Rebuilding the memory bank…")
        self._refitter = worker = Worker(_refit, model, good, self.ratio.value() / 100.0,
                                         self.session.models_dir, self.session.store)
        worker.yielded.connect(lambda step: self.rebuild_progress.step(*step))
        worker.returned.connect(lambda new: self._rebuilt(new, good))
        worker.errored.connect(self._rebuild_failed)
        worker.finished.connect(self._rebuild_ended)
        self.session.set_busy("rebuilding", True)
        worker.start()

    def _rebuilt(self, model: Model, good) -> None:
        self.rebuild_progress.finish(f"Memory bank rebuilt: {model.counts['memory_bank']} patch features.")
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
        model = self._model
        self.apply.setEnabled(model is not None and abs(self.sigma.value() - model.settings.sigma) > 1e-9)
        self.sigma.setEnabled(model is not None)
        self.defect_folder.setEnabled(model is not None)
        can_rebuild = model is not None and self.session.good is not None
        self.rebuild.setEnabled(can_rebuild and not self.session.busy)
        self.ratio.setEnabled(can_rebuild and not self.session.busy)
        self.rebuild_note.setText(
            "Re-uses the patch features of this session's training: no image is read again."
            if can_rebuild else "Train the product in this session to rebuild its memory bank from "
                                "the patch features kept in memory.")
