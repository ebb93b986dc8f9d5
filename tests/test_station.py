"""The inspection line on real files, a real watched folder, a real SQLite file and a video
file standing in for a camera."""
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from inspector.changes import Changes
from inspector.core.model import Settings
from inspector.core.model_store import load_model, save_model
from inspector.core.scoring import Inspector
from inspector.core.training import train
from inspector.data import images as images_module
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
            wait_for(lambda: len(seen) >= 3)
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


# ---- issue 8: the line never stops, never overwrites, never forgets ---------------------------

def latin1(folder, name: bytes, data: bytes):
    """A file whose name is not valid UTF-8 (as Windows shares and camera firmware write)."""
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as f:
        f.write(data)
    return Path(os.fsdecode(path))


def part_png(seed, defect=None):
    return cv2.imencode(".png", cv2.cvtColor(make_part(seed, defect=defect), cv2.COLOR_RGB2BGR))[1].tobytes()


def test_a_file_name_that_is_not_utf8_is_logged_and_the_line_goes_on(inspector, tmp_path):
    line = tmp_path / "line"
    line.mkdir()
    latin1(line, b"caf\xe9.png", part_png(1))
    write_parts(line, 1, seed=2)
    with ResultStore(tmp_path / "log.db") as store:
        outcomes = list(Station(inspector, store, "folder").inspect_files(sorted(line.iterdir())))
        assert [o.record.verdict for o in outcomes] == ["OK", "OK"]
    with ResultStore(tmp_path / "log.db") as store:  # a restart: no crash, and logged once
        assert list(Station(inspector, store, "folder").inspect_files(sorted(line.iterdir()))) == []
        names = sorted(Path(r.image_path).name for r in store.query())
    assert names == ["caf\\xe9.png", "good_002.png"]


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_links_that_lead_nowhere_are_errors_with_a_reason(inspector, tmp_path):
    line = tmp_path / "line"
    line.mkdir()
    (line / "a_loop.png").symlink_to(line / "a_loop.png")
    (line / "b_dangling.png").symlink_to(line / "gone.png")
    write_parts(line, 1, seed=3)
    with ResultStore(tmp_path / "log.db") as store:
        outcomes = list(Station(inspector, store, "file").inspect_files(sorted(line.iterdir())))
        assert [o.record.verdict for o in outcomes] == ["ERROR", "ERROR", "OK"]
        assert "symbolic links" in outcomes[0].record.error and "does not exist" in outcomes[1].record.error
        assert list(Station(inspector, store, "file").inspect_files(sorted(line.iterdir()))) == []  # once


def watch_until(station, watcher, count, act) -> list:
    """Run the watch loop in a thread, do `act()`, and stop once `count` outcomes came."""
    seen, stop = [], threading.Event()
    worker = threading.Thread(target=watch_folder, args=(station, watcher, stop, seen.append, 0.05))
    worker.start()
    try:
        act()
        wait_for(lambda: len(seen) >= count)
    finally:
        stop.set()
        worker.join()
    return seen


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_watch_logs_empty_files_and_broken_links_with_their_reason(inspector, tmp_path):
    folder = tmp_path / "watch"
    folder.mkdir()

    def arrive():
        (folder / "zero.png").write_bytes(b"")
        (folder / "loop.png").symlink_to(folder / "loop.png")
        (folder / "dangling.png").symlink_to(folder / "gone.png")
        write_parts(folder, 1, seed=4)

    with ResultStore(tmp_path / "log.db") as store, FolderWatcher(folder, settle_s=0.2, max_wait_s=1.0) as watcher:
        watch_until(Station(inspector, store, "folder"), watcher, 4, arrive)
        rows = logged(store)
    assert {n: r.verdict for n, r in rows.items()} == {"zero.png": "ERROR", "loop.png": "ERROR",
                                                       "dangling.png": "ERROR", "good_004.png": "OK"}
    assert "empty" in rows["zero.png"].error and "still incomplete after" in rows["zero.png"].error
    assert "symbolic links" in rows["loop.png"].error and "does not exist" in rows["dangling.png"].error


def wait_for(condition, timeout=60.0):
    """Wait for a condition set by another thread (generous: a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


MARK = 7  # images whose first pixel is this are made to fail


class Failing:
    """The real backbone, except that marked images raise the given exception in it."""

    def __init__(self, extractor, failure):
        self.extractor, self.failure = extractor, failure

    def __call__(self, images, shape):
        if images[0].size and images[0][0, 0, 0] == MARK:
            raise self.failure
        return self.extractor(images, shape)


@pytest.mark.parametrize("failure, name", [
    (ort_state.Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code"), "Fail"),
    (MemoryError(), "MemoryError"),
    (RuntimeError("something unexpected"), "RuntimeError"),
])
def test_any_failure_of_one_item_is_its_error_and_the_line_goes_on(inspector, tmp_path, failure, name, caplog):
    station_inspector = Inspector(inspector.model, extractor=Failing(inspector.extractor, failure))
    bad = make_part(5)
    bad[0, 0] = MARK
    with ResultStore(tmp_path / "log.db") as store:
        station = Station(station_inspector, store, "camera")
        outcomes = [station.inspect_image(bad, "bad"), station.inspect_image(np.zeros((0, 9, 3), np.uint8), "empty"),
                    station.inspect_image(make_part(6), "good")]
        assert [o.record.verdict for o in outcomes] == ["ERROR", "ERROR", "OK"]
        assert outcomes[0].record.error.startswith(name)
        assert outcomes[1].record.error.startswith("error")  # a real OpenCV error on an empty frame
        assert store.count(verdict="ERROR") == 2
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)  # for the log file


def test_sorting_never_overwrites_a_file(inspector, tmp_path):
    """A camera that always writes latest.png: every copy is kept, even within one second."""
    line = tmp_path / "line"
    line.mkdir()
    (line / "OK").mkdir()
    (line / "OK" / "latest.png").write_bytes(b"an earlier file, not ours to replace")
    with ResultStore(tmp_path / "log.db") as store:
        station = Station(inspector, store, "folder", sort_files=True)
        for seed in (10, 11, 12):
            (line / "latest.png").write_bytes(part_png(seed))
            assert station.inspect_file(line / "latest.png").record.verdict == "OK"
    kept = sorted((line / "OK").iterdir())
    assert len(kept) == 4 and (line / "OK" / "latest.png").read_bytes().startswith(b"an earlier")
    assert sorted(p.read_bytes() for p in kept if p.name != "latest.png") == sorted(part_png(s) for s in (10, 11, 12))


def test_a_logged_file_left_unsorted_by_a_crash_is_sorted_on_the_next_run(inspector, tmp_path):
    line = tmp_path / "line"
    [path] = write_parts(line, 1, "stain", seed=13)
    with ResultStore(tmp_path / "log.db") as store:
        Station(inspector, store, "folder").inspect_file(path)  # logged; killed before it was moved
        assert Station(inspector, store, "folder", sort_files=True).inspect_file(path) is None
        assert store.count() == 1
    assert [p.name for p in (line / "NG").iterdir()] == ["stain_013.png"] and not path.exists()


def write_slowly(path, data, pause_s, pieces=4):
    with open(path, "wb") as f:
        for chunk in np.array_split(np.frombuffer(data, np.uint8), pieces):
            f.write(chunk.tobytes())
            f.flush()
            time.sleep(pause_s)


def test_a_file_written_slowly_is_logged_once_when_complete(inspector, tmp_path):
    """Pauses longer than the settle time: the watcher hands the file out half-written; the
    line waits for it instead of logging it as an ERROR (and sorting it into ERROR/)."""
    folder = tmp_path / "watch"
    folder.mkdir()
    with ResultStore(tmp_path / "log.db") as store, FolderWatcher(folder, settle_s=0.1) as watcher:
        watch_until(Station(inspector, store, "folder", sort_files=True), watcher, 1,
                    lambda: write_slowly(folder / "slow.png", part_png(14), pause_s=0.4))
        assert [(r.verdict, r.image_path.rsplit("/", 1)[-1]) for r in store.query()] == [("OK", "slow.png")]
    assert [p.name for p in (folder / "OK").iterdir()] == ["slow.png"] and not (folder / "ERROR").exists()


def test_a_file_that_stays_truncated_is_one_error_after_the_limit(inspector, tmp_path):
    folder = tmp_path / "watch"
    folder.mkdir()
    data = part_png(15)
    with ResultStore(tmp_path / "log.db") as store, FolderWatcher(folder, settle_s=0.1, max_wait_s=1.5) as watcher:
        watch_until(Station(inspector, store, "folder"), watcher, 1,
                    lambda: (folder / "cut.png").write_bytes(data[: len(data) // 2]))  # a failed copy
        [row] = store.query()
    assert row.verdict == "ERROR" and "truncated" in row.error and "still incomplete after" in row.error


DISK_FULL = """
import resource, signal, sys
from pathlib import Path
from inspector.core.model_store import load_model
from inspector.core.scoring import Inspector
from inspector.station import Station
from inspector.store.results import ResultStore

models, db, line = map(Path, sys.argv[1:4])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
files = sorted(line.glob("*.png"))
with ResultStore(db) as store:
    station = Station(Inspector(load_model(models, "part")), store, "folder", sort_files=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # no file can grow: the disk is full
    outcomes = [station.inspect_file(path) for path in files]
    print([(o.record.verdict, o.safe) for o in outcomes], flush=True)
    print(sorted(p.name for p in line.iterdir()), flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    station.retry_pending(force=True)
    print(store.count(), store.pending_count(), flush=True)
"""


def test_disk_full_loses_no_verdict_and_moves_no_file_before_it_is_logged(inspector, tmp_path):
    save_model(inspector.model, tmp_path / "models")
    line = tmp_path / "line"
    write_parts(line, 2, seed=16)
    ResultStore(tmp_path / "log.db").close()
    out = subprocess.run([sys.executable, "-c", DISK_FULL, str(tmp_path / "models"), str(tmp_path / "log.db"),
                          str(line)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    verdicts, while_full, counts = out.stdout.splitlines()
    assert verdicts == "[('OK', False), ('OK', False)]"  # not logged yet: kept in memory
    assert while_full == "['good_016.png', 'good_017.png']"  # not moved
    assert counts == "2 0"  # written once there was space again
    assert sorted(p.name for p in (line / "OK").iterdir()) == ["good_016.png", "good_017.png"]
    with ResultStore(tmp_path / "log.db") as store:
        assert store.summary() == {"OK": 2, "NG": 0, "ERROR": 0, "total": 2}


# ---- what the log says is what decided ------------------------------------------------------

def test_each_record_holds_the_model_version_and_threshold_that_decided(inspector, tmp_path):
    models = tmp_path / "models"
    first = save_model(inspector.model, models)
    messages = []
    with ResultStore(tmp_path / "log.db") as store:
        station = Station(Inspector(first), store, "camera", models_dir=models,
                          on_message=lambda level, text: messages.append((level, text)))
        before = station.inspect_image(make_part(20), "a").record
        second = Changes(models, store).set_tolerance("part", 1.0)
        after = station.inspect_image(make_part(21), "b").record
        # a version that cannot be loaded: the line keeps the one it has and says so
        broken = models / "part" / "v0003"
        shutil.copytree(models / "part" / "v0002", broken)
        (broken / "model.json").write_text((broken / "model.json").read_text().replace('"tolerance": 1.0', '"tolerance": 0.5'))
        kept = station.inspect_image(make_part(22), "c").record
    assert (before.model_version, before.model_id, before.threshold) == (1, first.model_id, first.threshold)
    assert (after.model_version, after.model_id, after.threshold) == (2, second.model_id, second.threshold)
    assert kept.model_version == 2
    assert messages[0][0] == "info" and "model version 2" in messages[0][1] and "tolerance 3 -> 1" in messages[0][1]
    assert messages[1][0] == "error" and "Version 3" in messages[1][1] and "goes on with version 2" in messages[1][1]


def test_a_tolerance_changed_during_a_run_never_mixes_thresholds(inspector, tmp_path):
    models = tmp_path / "models"
    save_model(inspector.model, models)
    line = tmp_path / "line"
    files = write_parts(line, 30, seed=30)
    done = threading.Event()
    saved = {1: load_model(models, "part")}  # every version, as saved (older ones are pruned on disk)
    with ResultStore(tmp_path / "log.db") as store:
        def change():
            tolerance = 3.0
            while not done.is_set():
                tolerance = 1.0 if tolerance == 3.0 else 3.0
                model = Changes(models, store).set_tolerance("part", tolerance)
                saved[model.version] = model

        changer = threading.Thread(target=change)
        changer.start()
        try:
            station = Station(Inspector(load_model(models, "part")), store, "folder", models_dir=models)
            records = [o.record for o in station.inspect_files(files)]
        finally:
            done.set()
            changer.join()
    assert len(records) == 30 and len({r.model_version for r in records}) > 1
    for r in records:
        model = saved[r.model_version]
        assert (r.model_id, r.threshold) == (model.model_id, model.threshold)
        assert r.verdict == ("NG" if r.score >= model.threshold else "OK")


def test_a_failure_while_reading_ahead_is_that_files_error(inspector, tmp_path, monkeypatch):
    files = write_parts(tmp_path / "line", 3, seed=40)
    real = images_module.load_image

    def load(path):
        if Path(path).name == "good_041.png":
            raise MemoryError()
        return real(path)

    monkeypatch.setattr(images_module, "load_image", load)
    with ResultStore(tmp_path / "log.db") as store:
        outcomes = list(Station(inspector, store, "folder").inspect_files(files))
    assert [(o.record.verdict, o.record.error) for o in outcomes] == [("OK", None), ("ERROR", "MemoryError"),
                                                                    ("OK", None)]


# ---- what a factory network share throws at the line (issue 19) ---------------------------------

@pytest.mark.skipif(os.name == "nt", reason="named pipes and /dev/zero are POSIX")
def test_a_named_pipe_or_a_device_link_never_stops_the_watched_line(inspector, tmp_path):
    folder = tmp_path / "watch"
    folder.mkdir()

    def arrive():
        os.mkfifo(folder / "a_pipe.png")
        (folder / "b_zero.png").symlink_to("/dev/zero")
        write_parts(folder, 2, seed=4)

    with ResultStore(tmp_path / "log.db") as store, FolderWatcher(folder, settle_s=0.2, max_wait_s=1.0) as watcher:
        watch_until(Station(inspector, store, "folder", sort_files=True), watcher, 4, arrive)
        rows = logged(store)
    assert {n: r.verdict for n, r in rows.items()} == {"a_pipe.png": "ERROR", "b_zero.png": "ERROR",
                                                       "good_004.png": "OK", "good_005.png": "OK"}
    assert "named pipe" in rows["a_pipe.png"].error and "a device" in rows["b_zero.png"].error
    assert sorted(p.name for p in (folder / "ERROR").iterdir()) == ["a_pipe.png", "b_zero.png"]
