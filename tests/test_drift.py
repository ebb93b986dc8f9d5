"""Images unlike the good images a product was trained on (a camera's MJPG frames against PNG
files, another size, other lighting) are said, once, instead of silently rejected: the good
images' profile is stored and signed in the model (core.profile)."""
import json
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import WAIT, copy_models

from inspector.changes import Changes
from inspector.cli import main
from inspector.core.model import Settings
from inspector.core.model_store import load_model, save_model
from inspector.core.profile import differences, profile_of
from inspector.errors import ModelError
from inspector.sources.camera import Camera
from inspector.station import Station, inspector_for, watch_camera
from inspector.store.results import ResultStore
from inspector.synthetic import make_part, write_parts


def mjpg_video(path, seeds, size=256):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    for seed in seeds:
        writer.write(cv2.cvtColor(make_part(seed, size), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def first_frame(video):
    ok, frame = cv2.VideoCapture(str(video)).read()
    assert ok
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    good = write_parts(root / "good", 12)
    with ResultStore(root / "log.db") as store:
        model, _ = Changes(root / "models", store).train("Disc", root / "good", Settings(sampling_ratio=0.02))
    return root, model


def test_a_png_part_looks_like_the_good_images_and_camera_frames_do_not(trained, tmp_path):
    root, model = trained
    profile = model.profile
    assert profile["formats"] == ["PNG"] and profile["images"] == 12 and profile["height"] == [256, 256]
    good = write_parts(tmp_path / "new", 1, seed=77)[0]
    assert differences(profile, str(good), make_part(77)) == {}
    frame = first_frame(mjpg_video(tmp_path / "line.avi", [78]))
    drift = differences(profile, f"{tmp_path / 'line.avi'}#1", frame)
    assert set(drift) == {"compression"} and "JPEG compression" in drift["compression"]
    jpeg = tmp_path / "part.jpg"
    cv2.imwrite(str(jpeg), cv2.cvtColor(make_part(79), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert {"format", "compression"} <= set(differences(profile, str(jpeg), cv2.imread(str(jpeg))[..., ::-1]))
    assert set(differences(profile, str(good), make_part(80, 512))) == {"size"}
    dark = (make_part(81) * 0.6).astype(np.uint8)
    assert "darker" in differences(profile, str(good), dark)["brightness"]
    flat = np.full((256, 256, 3), 128, np.uint8)
    assert "less contrast" in differences(profile, str(good), flat)["contrast"]
    assert differences(None, str(good), dark) == {}  # an older model without a profile: nothing said


def test_the_comparison_is_cheap(trained):
    """Measured: the median time of differences() on a 256 px and a 2048 px part."""
    profile = trained[1].profile
    for size, limit_ms in ((256, 1.0), (2048, 1.0)):
        image = make_part(5, size)
        times = []
        for _ in range(30):
            started = time.perf_counter()
            differences(profile, "part.png", image)
            times.append((time.perf_counter() - started) * 1000)
        print(f"differences() on {size} x {size}: median {np.median(times):.3f} ms")
        assert np.median(times) < limit_ms


def test_the_profile_is_signed_with_the_model_and_older_models_load_without_it(trained, tmp_path):
    root, model = trained
    models = copy_models(root / "models", tmp_path / "models")
    meta_file = models / "Disc" / "v0001" / "model.json"
    meta = json.loads(meta_file.read_text())
    assert meta["profile"] == model.profile
    meta["profile"]["formats"] = ["PNG", "JPEG"]  # an edit that would hide the warning
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="checksum"):
        load_model(models, "Disc")
    saved = save_model(replace(model, profile=None), models)  # as an older Inspector saved it
    assert "profile" not in json.loads((models / "Disc" / f"v{saved.version:04d}" / "model.json").read_text())
    assert load_model(models, "Disc").profile is None
    taught = Changes(models, ResultStore(tmp_path / "log.db")).teach("Disc", write_parts(tmp_path / "t", 1, seed=90))
    assert taught.model.profile is not None  # a taught part's look joins the model


def test_the_line_carries_the_difference_on_every_part_and_says_it_once(trained, tmp_path):
    root, model = trained
    video = mjpg_video(tmp_path / "line.avi", range(100, 106))
    outcomes, messages = [], []
    with ResultStore(tmp_path / "log.db") as store, Camera(video) as camera:
        station = Station(inspector_for(model), store, "camera", on_message=lambda *m: messages.append(m))
        watch_camera(station, camera, threading.Event(), outcomes.append)
    assert len(outcomes) >= 3 and all("compression" in o.drift for o in outcomes)
    said = [text for level, text in messages if "does not look like the good images" in text]
    assert len(said) == 1 and "JPEG compression" in said[0] and "train --camera" in said[0]


def test_the_command_line_says_it_once_on_stderr(trained, tmp_path, capsys):
    root, _ = trained
    video = mjpg_video(tmp_path / "line.avi", range(110, 116))
    common = ["--models-dir", str(root / "models"), "--db", str(tmp_path / "log.db")]
    main(["camera", str(video), "--product", "Disc"] + common)
    out, err = capsys.readouterr()
    assert out.count("#") >= 3 and err.count("JPEG compression") == 1


def test_the_monitor_shows_it(open_window, trained, tmp_path, qtbot):
    root, _ = trained
    window = open_window(copy_models(root / "models", tmp_path / "models"))
    monitor = window.monitor
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    window.tabs.setCurrentWidget(monitor)
    monitor.source.setCurrentIndex(monitor.source.findData("camera"))
    monitor.camera.setEditText(str(mjpg_video(tmp_path / "line.avi", range(120, 124))))
    monitor.start_stop()
    qtbot.waitUntil(lambda: not monitor.running and monitor.painted >= 1, timeout=WAIT)
    assert monitor.drift.isVisible() and "JPEG compression" in monitor.drift.text()
    assert "does not look like the good images" in window.log.toPlainText()
