"""Teach from the camera: frames of good parts from the line's camera (a generated MJPG video
file stands in for it, through the same OpenCV path) become the product's taught good images
and its training, so that the camera's own good frames then pass."""
import threading

import cv2
import pytest
from conftest import WAIT

from inspector import services
from inspector.cli import EXIT_ERROR, EXIT_OK, main
from inspector.core.model_store import load_model
from inspector.errors import Cancelled, SourceError
from inspector.station import inspector_for
from inspector.synthetic import make_part


def mjpg_video(path, seeds, size=256, defect=None):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (size, size))
    for seed in seeds:
        writer.write(cv2.cvtColor(make_part(seed, size, defect), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def frames(video):
    capture, out = cv2.VideoCapture(str(video)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_capture_saves_png_frames_and_says_when_none_came(tmp_path):
    video = mjpg_video(tmp_path / "line.avi", range(30))
    steps = []
    saved = services.capture_good_frames(video, 5, tmp_path / "taught", progress=lambda *s: steps.append(s))
    assert len(saved) == 5 and all(p.suffix == ".png" and p.parent == tmp_path / "taught" for p in saved)
    assert steps[-1] == ("capturing good frames", 5, 5) and len({p.name for p in saved}) == 5
    assert len(services.capture_good_frames(video, 50, tmp_path / "more")) <= 30  # the video ends first
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        services.capture_good_frames(video, 5, tmp_path / "cancelled", cancel=cancel)
    with pytest.raises(SourceError, match="does not exist"):
        services.capture_good_frames(tmp_path / "missing.avi", 5, tmp_path / "none")
    with pytest.raises(SourceError, match="No frame came"):
        services.capture_good_frames("rtsp://127.0.0.1:9/none", 5, tmp_path / "none", timeout_s=1.0)


def test_train_from_the_camera_then_its_good_frames_pass(tmp_path, capsys):
    common = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    video = mjpg_video(tmp_path / "teach.avi", range(80))  # a camera drops frames it is not asked for
    assert main(["train", "--product", "Disc"] + common) == EXIT_ERROR  # neither a folder nor a camera
    assert main(["train", "--camera", str(video), "--frames", "20", "--product", "Disc", "--sampling-ratio", "0.05"]
                + common) == EXIT_OK
    err = capsys.readouterr().err
    assert "Captured 20 frame(s)" in err
    model = load_model(tmp_path / "models", "Disc")
    taught = services.taught_images(tmp_path / "models", "Disc")
    assert len(taught) == 20 and model.counts["good_images"] == 20
    assert model.good_folder == str(services.taught_dir(tmp_path / "models", "Disc"))  # where a rebuild reads them
    inspector = inspector_for(model)
    good = frames(mjpg_video(tmp_path / "good.avi", range(500, 506)))
    bad = frames(mjpg_video(tmp_path / "bad.avi", range(600, 603), defect="stain"))
    good_verdicts = [inspector.inspect(f).verdict for f in good]
    print(f"camera-taught model: {good_verdicts.count('OK')} of {len(good)} good MJPG frames OK")
    assert good_verdicts.count("OK") >= len(good) - 1
    assert all(inspector.inspect(f).verdict == "NG" for f in bad)


def test_the_train_tab_captures_and_trains(open_window, tmp_path, qtbot):
    window = open_window(tmp_path / "models")
    window.products.create("Disc")
    tab = window.train
    assert not tab.capture.isEnabled()  # no camera given yet
    tab.camera.setText(str(mjpg_video(tmp_path / "teach.avi", range(60))))
    tab.frames.setValue(12)
    assert tab.capture.isEnabled()
    tab.capture.click()
    assert tab.cancel.isEnabled()
    qtbot.waitUntil(lambda: window.session.model is not None and tab._trainer is None, timeout=WAIT)
    assert "Trained in" in tab.progress.label.text()
    assert window.session.model.counts["good_images"] == 12
    assert len(services.taught_images(tmp_path / "models", "Disc")) == 12 and "12 taught" in tab.taught.text()


def test_the_capture_is_locked_for_an_operator(open_window, tmp_path, qtbot):
    window = open_window(tmp_path / "models")
    window.products.create("Disc")
    window.session.lock()
    window.train.camera.setText(str(tmp_path / "teach.avi"))
    assert not window.train.capture.isEnabled()
