"""The inspection line on real files, a real watched folder, a real SQLite file and a video
file standing in for a camera."""
import sqlite3
import threading
import time

import cv2
import numpy as np
import pytest

from inspector.core.model import Settings
from inspector.core.scoring import Inspector
from inspector.core.training import train
from inspector.data.images import save_image
from inspector.sources.camera import Camera
from inspector.sources.folder import FolderWatcher
from inspector.station import Station, watch_camera, watch_folder
from inspector.store.results import ResultStore
from inspector.synthetic import make_part, write_parts


@pytest.fixture(scope="module")
def inspector(tmp_path_factory):
    model, _ = train("part", write_parts(tmp_path_factory.mktemp("good"), 20), Settings())
    return Inspector(model)


def bad_and_odd_files(folder):
    """Valid images in unusual layouts, and every kind of broken file."""
    folder.mkdir(parents=True, exist_ok=True)
    part = make_part(50)
    cv2.imwrite(str(folder / "gray16.png"), (cv2.cvtColor(part, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(part, cv2.COLOR_RGB2BGRA))
    save_image(folder / "Prüfteil_検査.jpg", part)
    (folder / "zero.png").write_bytes(b"")
    full = (folder / "rgba.png").read_bytes()
    (folder / "half_written.png").write_bytes(full[: len(full) // 2])
    (folder / "text.png").write_bytes(b"this is not an image")
    huge = bytearray(full[:33])  # a PNG header claiming 100000 x 100000 pixels
    huge[16:24] = (100000).to_bytes(4, "big") * 2
    (folder / "huge.png").write_bytes(bytes(huge) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    # a gray picture of a colour part may well be NG: what matters is that it is inspected
    return {"gray16.png": "OK|NG", "rgba.png": "OK", "Prüfteil_検査.jpg": "OK", "zero.png": "ERROR",
            "half_written.png": "ERROR", "text.png": "ERROR", "huge.png": "ERROR"}


def logged(store):
    return {r.image_path.rsplit("/", 1)[-1]: r for r in store.query()}


def test_every_file_gets_one_verdict_and_bad_files_are_logged_with_a_reason(inspector, tmp_path):
    expected = bad_and_odd_files(tmp_path / "line")
    with ResultStore(tmp_path / "log.db") as store:
        outcomes = list(Station(inspector, store, "folder").inspect_files(sorted((tmp_path / "line").iterdir())))
        rows = logged(store)
    assert len(outcomes) == len(expected)
    assert rows.keys() == expected.keys()
    assert all(rows[name].verdict in verdicts.split("|") for name, verdicts in expected.items())
    assert "empty" in rows["zero.png"].error.lower() or "0 bytes" in rows["zero.png"].error
    assert "truncated" in rows["half_written.png"].error
    assert "100000" in rows["huge.png"].error
    assert all(r.error is None and r.score is not None and r.latency_ms > 0 for r in rows.values() if r.verdict != "ERROR")


def test_processing_twice_or_after_a_restart_logs_each_file_once(inspector, tmp_path):
    files = write_parts(tmp_path / "line", 3, seed=70) + write_parts(tmp_path / "line", 2, "scratch", seed=80)
    with ResultStore(tmp_path / "log.db") as store:
        assert len(list(Station(inspector, store, "folder").inspect_files(files))) == 5
        assert list(Station(inspector, store, "folder").inspect_files(files)) == []
    with ResultStore(tmp_path / "log.db") as store:  # a new process after a crash
        assert list(Station(inspector, store, "folder").inspect_files(files)) == []
        assert store.summary() == {"OK": 3, "NG": 2, "ERROR": 0, "total": 5}


def test_sorting_and_overlay_archive(inspector, tmp_path):
    line = tmp_path / "line"
    write_parts(line, 1, seed=90)
    write_parts(line, 1, "stain", seed=91)
    (line / "bad.png").write_bytes(b"nope")
    with ResultStore(tmp_path / "log.db") as store:
        station = Station(inspector, store, "folder", sort_files=True, archive_dir=tmp_path / "archive")
        list(station.inspect_files(sorted(line.glob("*.png"))))
    assert [p.name for p in (line / "OK").iterdir()] == ["good_090.png"]
    assert [p.name for p in (line / "NG").iterdir()] == ["stain_091.png"]
    assert [p.name for p in (line / "ERROR").iterdir()] == ["bad.png"]
    archived = list((tmp_path / "archive" / "NG").glob("*.jpg"))
    assert len(archived) == 1 and cv2.imread(str(archived[0])).shape == (256, 256, 3)


def test_a_locked_database_loses_no_verdict(inspector, tmp_path):
    db = tmp_path / "log.db"
    files = write_parts(tmp_path / "line", 2, seed=95)
    with ResultStore(db, timeout_s=0.2) as store:
        blocker = sqlite3.connect(db)
        blocker.execute("BEGIN EXCLUSIVE")
        outcomes = list(Station(inspector, store, "folder").inspect_files(files[:1]))
        assert outcomes[0].record.verdict == "OK" and "locked" in outcomes[0].log_error
        blocker.rollback()
        blocker.close()
        list(Station(inspector, store, "folder").inspect_files(files[1:]))
        assert store.count() == 2 and store.pending_count() == 0


def test_watched_folder_inspects_new_and_slowly_written_files(inspector, tmp_path):
    folder = tmp_path / "watch"
    folder.mkdir()
    write_parts(folder, 1, seed=100)  # arrived while the station was stopped
    seen, stop = [], threading.Event()
    with ResultStore(tmp_path / "log.db") as store, FolderWatcher(folder, settle_s=0.3) as watcher:
        station = Station(inspector, store, "folder")
        worker = threading.Thread(target=watch_folder, args=(station, watcher, stop, seen.append, 0.05))
        worker.start()
        try:
            write_parts(folder, 1, "scratch", seed=101)
            data = cv2.imencode(".png", make_part(102, defect="stain"))[1].tobytes()
            with open(folder / "slow.png", "wb") as f:  # copied slowly, in pieces
                for i in range(0, len(data), len(data) // 5):
                    f.write(data[i:i + len(data) // 5])
                    f.flush()
                    time.sleep(0.15)
            deadline = time.monotonic() + 20
            while len(seen) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            worker.join()
        rows = logged(store)
    assert {n: r.verdict for n, r in rows.items()} == {"good_100.png": "OK", "scratch_101.png": "NG", "slow.png": "NG"}


def test_video_file_as_camera(inspector, tmp_path):
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for i in range(6):
        writer.write(cv2.cvtColor(make_part(200 + i, defect="stain" if i >= 3 else None), cv2.COLOR_RGB2BGR))
    writer.release()
    seen, statuses = [], []
    with ResultStore(tmp_path / "log.db") as store, Camera(video) as camera:
        watch_camera(Station(inspector, store, "camera"), camera, threading.Event(), seen.append,
                     on_status=lambda s, e: statuses.append(s))
        rows = store.query()
    assert statuses[-1] == "ended" and len(seen) == len(rows) >= 3
    assert {r.source for r in rows} == {"camera"}
    assert "NG" in {r.verdict for r in rows}  # the last frames carry a stain
