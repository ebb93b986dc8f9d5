import time

import cv2
import numpy as np
import pytest

from inspector.errors import SourceError
from inspector.sources.camera import Camera, list_cameras

WIDTH, HEIGHT, BITS = 64, 48, 8


def make_video(path, frames, fps):
    """An MJPG .avi whose frame i shows i in binary as black/white blocks on the top row,
    over a red (RGB) lower half."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for bit in range(BITS):
            if i >> bit & 1:
                frame[:8, bit * 8:(bit + 1) * 8] = 255
        frame[24:] = (0, 0, 255)  # BGR red
        writer.write(frame)
    writer.release()
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == frames, "the video writer produced no usable video"
    capture.release()
    return path


def index(frame):
    return sum(1 << bit for bit in range(BITS) if frame[:8, bit * 8:(bit + 1) * 8].mean() > 128)


def wait_until(condition, timeout=2.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_frames_from_video_are_rgb(tmp_path):
    with Camera(make_video(tmp_path / "clip.avi", 10, 20)) as camera:
        frame = camera.latest(2)
        assert camera.status == "live"
    assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
    red = frame[30:, :].reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 50 and red[2] < 50
    assert camera.status == "stopped" and not camera.running


def test_each_frame_handed_out_once_until_end_of_file(tmp_path):
    with Camera(make_video(tmp_path / "clip.avi", 20, 40)) as camera:
        seen = []
        while (frame := camera.latest(2)) is not None:
            seen.append(index(frame))
        assert seen == sorted(set(seen)) and seen[-1] == 19
        assert camera.status == "ended" and not camera.running
        assert camera.latest(0.1) is None and camera.snap(0.1) is None


def test_slow_consumer_gets_the_newest_frame_not_a_queue(tmp_path):
    with Camera(make_video(tmp_path / "clip.avi", 60, 40)) as camera:
        first = index(camera.latest(2))
        time.sleep(0.3)  # about 12 frames arrive meanwhile
        second = index(camera.latest(1))
        third = camera.latest(0)  # nothing newer yet, or a newer frame: never an old one
    assert second > first + 2
    assert third is None or index(third) > second


def test_snap_waits_for_a_fresh_frame(tmp_path):
    with Camera(make_video(tmp_path / "clip.avi", 5, 50)) as camera:
        first = index(camera.snap(2))
        assert wait_until(lambda: camera.status == "ended")
        assert camera.snap(0.2) is None  # no frame will come after the end
        assert index(camera.latest(0.2)) == 4 > first  # the newest frame was read but not handed out


def test_file_is_paced_at_its_frame_rate(tmp_path):
    start = time.monotonic()
    with Camera(make_video(tmp_path / "clip.avi", 10, 10)) as camera:
        assert wait_until(lambda: camera.status == "ended", 3)
    assert time.monotonic() - start >= 0.8


def test_fps_overrides_file_frame_rate(tmp_path):
    start = time.monotonic()
    with Camera(make_video(tmp_path / "clip.avi", 5, 50), fps=10) as camera:
        assert wait_until(lambda: camera.status == "ended", 3)
    assert time.monotonic() - start >= 0.4


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        Camera(tmp_path / "gone.avi").start()
    (tmp_path / "notes.avi").write_text("not a video")
    with pytest.raises(SourceError, match="Cannot open video file"):
        Camera(str(tmp_path / "notes.avi")).start()


def test_source_that_cannot_be_opened_keeps_retrying_until_stopped():
    camera = Camera("99", reconnect_s=0.1)  # digits mean a camera index
    assert camera.source == 99
    camera.start()
    try:
        assert wait_until(lambda: camera.status == "reconnecting")
        time.sleep(0.3)  # several retries
        assert camera.running and camera.status == "reconnecting"
        assert "camera 99" in camera.last_error
        assert camera.latest(0.1) is None
    finally:
        start = time.monotonic()
        camera.stop()
    assert time.monotonic() - start < 2
    assert not camera.running and camera.status == "stopped"


def test_dropped_stream_reconnects(tmp_path):
    # A file opened as a URL behaves like a network stream: at its end the stream "drops".
    url = make_video(tmp_path / "clip.avi", 5, 50).as_uri()
    with Camera(url, reconnect_s=0.2) as camera:
        assert wait_until(lambda: camera.status == "reconnecting")
        assert camera.last_error.startswith("Lost stream")
        assert camera.snap(2) is not None  # frames again after reconnecting
        assert camera.running


def test_list_cameras_returns_openable_indices():
    cameras = list_cameras(max_index=2)
    assert isinstance(cameras, list) and all(isinstance(i, int) and 0 <= i < 2 for i in cameras)
