import os
import threading
import time

import cv2
import numpy as np
import pytest

from inspector.data.images import load_image
from inspector.errors import SourceError
from inspector.sources import folder as folder_module
from inspector.sources.folder import FolderWatcher

SETTLE_S = 0.2


def png(path, value=100, size=32):
    """A PNG-encoded image at `path`, whatever its suffix."""
    path.write_bytes(cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))[1].tobytes())


def drain(watcher, timeout=SETTLE_S * 3):
    """Every file the watcher hands out until it stays quiet for `timeout` seconds."""
    found = []
    while (path := watcher.next_ready(timeout)) is not None:
        found.append(path.name)
    return found


@pytest.fixture
def watcher(tmp_path):
    with FolderWatcher(tmp_path, settle_s=SETTLE_S) as w:
        yield w


def test_files_present_at_start_are_picked_up(tmp_path):
    png(tmp_path / "b.png")
    png(tmp_path / "a.jpg")
    with FolderWatcher(tmp_path, settle_s=SETTLE_S) as watcher:
        assert drain(watcher) == ["a.jpg", "b.png"]


def test_new_file_returned_once(tmp_path, watcher):
    png(tmp_path / "part.png")
    path = watcher.next_ready(3)
    assert path == (tmp_path / "part.png").resolve()
    load_image(path)  # reading it is no new file
    watcher._add(path)  # what any event about it does (a close, an attribute change)
    assert drain(watcher) == []


def test_what_is_remembered_is_bounded(tmp_path, monkeypatch):
    """Files handed out are remembered, up to a bound (the result log keeps each file once
    beyond it), so a station running for weeks does not grow."""
    monkeypatch.setattr(folder_module, "REMEMBERED", 5)
    with FolderWatcher(tmp_path, settle_s=0.05) as watcher:
        for i in range(12):
            png(tmp_path / f"{i:02d}.png", value=i)
        got = []
        while len(got) < 12:
            path = watcher.next_ready(30)
            assert path is not None
            got.append(path.name)
            watcher.since(path)
        assert len(watcher._returned) == 5 and not watcher._since and not watcher._pending


def test_an_incomplete_file_handed_back_is_waited_for_then_handed_out(tmp_path):
    with FolderWatcher(tmp_path, settle_s=0.1, max_wait_s=60) as watcher:
        png(tmp_path / "part.png")
        path = watcher.next_ready(30)
        since = watcher.since(path)
        watcher.recheck(path, since)  # the reader found it cut short
        assert watcher.next_ready(30) == path  # handed out again once stable: no new version needed
        assert watcher.since(path) == since  # waiting is counted from when it was first seen


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_empty_files_and_broken_links_are_handed_out(tmp_path):
    with FolderWatcher(tmp_path, settle_s=0.1, max_wait_s=1.0) as watcher:
        (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
        (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
        (tmp_path / "zero.png").write_bytes(b"")
        got = {watcher.next_ready(30).name for _ in range(3)}  # the empty one after max_wait_s
    assert got == {"loop.png", "dangling.png", "zero.png"}


def test_file_written_slowly_is_returned_only_when_complete(tmp_path):
    data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1].tobytes()
    done = threading.Event()

    def write_slowly():
        with open(tmp_path / "slow.png", "wb") as f:
            for chunk in np.array_split(np.frombuffer(data, np.uint8), 6):
                f.write(chunk.tobytes())
                f.flush()
                time.sleep(0.25)
        done.set()

    with FolderWatcher(tmp_path, settle_s=0.5) as watcher:
        writer = threading.Thread(target=write_slowly)
        writer.start()
        path = watcher.next_ready(5)
        assert path is not None and done.is_set()
        assert path.read_bytes() == data
        assert load_image(path).shape == (64, 64, 3)
        writer.join()
        assert drain(watcher, 0.6) == []


def test_file_written_as_tmp_then_renamed(tmp_path, watcher):
    png(tmp_path / "x.tmp")
    png(tmp_path / "y.bmp")
    os.rename(tmp_path / "x.tmp", tmp_path / "x.png")
    os.rename(tmp_path / "y.bmp", tmp_path / "y.tmp")  # an image renamed away before it settled
    assert drain(watcher) == ["x.png"]


def test_file_moved_in_from_elsewhere(tmp_path):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    with FolderWatcher(inbox, settle_s=SETTLE_S) as watcher:
        png(outside / "m.png")
        os.replace(outside / "m.png", inbox / "m.png")
        assert drain(watcher) == ["m.png"]


def test_subfolders_and_other_suffixes_ignored(tmp_path, watcher):
    for sub in ["OK", "NG"]:
        (tmp_path / sub).mkdir()
        png(tmp_path / sub / "sorted.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "image.png.crdownload").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    png(tmp_path / "real.PNG")
    assert drain(watcher) == ["real.PNG"]
    os.replace(tmp_path / "real.PNG", tmp_path / "OK" / "real.PNG")  # the station sorts it
    assert drain(watcher) == []


def test_each_file_exactly_once_with_two_consumers(tmp_path, watcher):
    got = []

    def consume():
        got.extend(drain(watcher, 1.0))

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for c in consumers:
        c.start()
    for i in range(12):
        png(tmp_path / f"{i:02d}.png", value=i)
    for c in consumers:
        c.join()
    assert sorted(got) == [f"{i:02d}.png" for i in range(12)]


def test_rewritten_file_is_a_new_image(tmp_path, watcher):
    png(tmp_path / "current.png", value=10)
    assert drain(watcher) == ["current.png"]
    png(tmp_path / "current.png", value=200, size=40)
    assert drain(watcher) == ["current.png"]


def test_files_arriving_while_stopped_are_picked_up_on_restart(tmp_path):
    watcher = FolderWatcher(tmp_path, settle_s=SETTLE_S)
    png(tmp_path / "first.png")
    watcher.start()
    assert drain(watcher) == ["first.png"]
    watcher.stop()
    assert not watcher.running
    png(tmp_path / "while_stopped.png")
    watcher.start()
    try:
        assert drain(watcher) == ["while_stopped.png"]
    finally:
        watcher.stop()
    assert watcher.next_ready(5) is None  # stopped: returns at once instead of waiting


def test_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderWatcher(tmp_path / "nowhere").start()


def test_a_file_changing_while_queued_is_handed_out_once(tmp_path):
    """A backlog (a restart) with a slow writer: a file that changes while it waits its turn
    is handed out once, as it is when its turn comes (twice, the line found it moved the
    second time and logged an error)."""
    for name in ("a.png", "b.png", "c.png"):
        png(tmp_path / name)
    with FolderWatcher(tmp_path, settle_s=SETTLE_S) as watcher:
        assert watcher.next_ready(5).name == "a.png"  # b and c wait their turn
        png(tmp_path / "c.png", value=200, size=40)  # c changes meanwhile
        watcher._add((tmp_path / "c.png").resolve())  # what its events do
        assert watcher.next_ready(5).name == "b.png"  # c's change is seen: it settles while c waits
        changed = time.monotonic()
        while time.monotonic() - changed < 2 * SETTLE_S:  # the settle time passes (no machine speed in it)
            time.sleep(SETTLE_S / 4)
        assert drain(watcher) == ["c.png"]


def test_a_file_moved_away_while_queued_is_not_handed_out(tmp_path):
    for name in ("a.png", "b.png"):
        png(tmp_path / name)
    with FolderWatcher(tmp_path, settle_s=SETTLE_S) as watcher:
        assert watcher.next_ready(5).name == "a.png"
        (tmp_path / "OK").mkdir()
        os.replace(tmp_path / "b.png", tmp_path / "OK" / "b.png")
        assert drain(watcher) == []
