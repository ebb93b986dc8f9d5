import os
import threading
import time

import cv2
import numpy as np
import pytest

from inspector.errors import SourceError
from inspector.sources.camera import STOP_TIMEOUT_S, Camera, list_cameras

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


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_frames_from_video_are_rgb(tmp_path):
    with Camera(make_video(tmp_path / "clip.avi", 200, 20)) as camera:  # 10 s: still live when looked at
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
    with Camera(make_video(tmp_path / "clip.avi", 30, 60)) as camera:
        first = index(camera.latest(30))
        assert wait_until(lambda: camera.status == "ended")  # every frame read meanwhile
        assert index(camera.latest(1)) == 29 > first  # the newest, not the next in a queue
        assert camera.latest(0) is None  # nothing newer: never an old one


def test_snap_waits_for_a_fresh_frame(tmp_path):
    with Camera(make_video(tmp_path / "clip.avi", 100, 100)) as camera:  # 1 s: snapped before it ends
        first = index(camera.snap(30))
        assert wait_until(lambda: camera.status == "ended")
        assert camera.snap(0.2) is None  # no frame will come after the end
        assert index(camera.latest(0.2)) == 99 > first  # the newest frame was read but not handed out


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
        assert camera.running and camera.status == "reconnecting"
        assert "camera 99" in camera.last_error
        assert camera.latest(0.1) is None
    finally:
        start = time.monotonic()
        camera.stop()
    assert time.monotonic() - start < 10
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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="a named pipe stands in for a USB camera that hangs")
def test_a_camera_that_stops_delivering_is_noticed_and_stop_does_not_hang(tmp_path):
    """A named pipe fed with frames, then kept open without data: the read hangs, as a USB
    camera's does. The camera reports 'no frames' and stop() still returns."""
    pipe = tmp_path / "camera.mjpeg"
    os.mkfifo(pipe)
    frames = [cv2.imencode(".jpg", np.random.default_rng(i).integers(0, 255, (256, 256, 3), np.uint8))[1].tobytes()
              for i in range(120)]  # more than the stream probe reads before the first frame
    release = threading.Event()

    def feed():
        with open(pipe, "wb") as f:
            for frame in frames:
                f.write(frame)
            f.flush()
            release.wait(120)  # the camera hangs: no more data, the pipe stays open

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    camera = Camera(pipe, stall_s=1.0)
    camera.start()
    try:
        assert camera.latest(60) is not None and camera.status == "live"
        assert wait_until(lambda: camera.status == "no frames", 60)
        assert "No frame from" in camera.last_error
    finally:
        start = time.monotonic()
        camera.stop()
        stopped_in = time.monotonic() - start
        release.set()
    assert stopped_in < STOP_TIMEOUT_S + 5 and camera.status == "stopped"


def test_a_stream_that_stalls_with_its_connection_open_is_reported_as_no_frames():
    """A server that accepts the connection and sends nothing: 'no frames' after the stall
    time (5 s), as promised, not only 'connecting' and 'reconnecting'."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.5)
    held, done = [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    camera = Camera(f"http://127.0.0.1:{server.getsockname()[1]}/stream.mjpg")
    seen = []
    try:
        camera.start()
        assert wait_until(lambda: seen.append(camera.status) or seen[-1] == "no frames", 60), set(seen)
        assert "No frame from stream" in camera.last_error
        assert held  # the connection was open
    finally:
        camera.stop()
        done.set()
        acceptor.join()
        for connection in held:
            connection.close()
        server.close()
