"""The Qt-free parts behind the operator's screen: the engineer's PIN, one station per data
folder, kept NG frames, shifts, and the check of the system libraries the window needs."""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from inspector.changes import Changes
from inspector import services
from inspector.app import display
from inspector.errors import StoreError
from inspector.frames import FrameKeeper, frame_file_name
from inspector.instance import InstanceLock
from inspector.store.results import STATION, ResultStore
from inspector.users import (ENGINEER, User, LOCKOUT_S, MAX_TRIES, OPERATOR_USER, AccessDenied, Accounts, accounts_path,
                             require_engineer)

README = Path(__file__).resolve().parent.parent / "README.md"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_engineer_pin_is_checked_changed_only_with_the_old_one_and_guessing_is_slowed(tmp_path):
    clock = Clock()
    accounts = Accounts(accounts_path(tmp_path), clock)
    assert not accounts.is_set_up()
    with pytest.raises(AccessDenied, match="No engineer PIN"):
        accounts.unlock("1234")
    engineer = accounts.set_engineer("Eve", "1234")
    assert engineer.is_engineer and str(engineer) == "Eve (engineer)" and str(OPERATOR_USER) == "operator"
    assert accounts.unlock("1234") == engineer
    with pytest.raises(AccessDenied, match="Wrong PIN"):
        accounts.set_engineer("Mallory", "9999", old_pin="0000")  # a change needs the current PIN
    assert accounts.set_engineer("Eve", "5678", old_pin="1234").name == "Eve"
    with pytest.raises(AccessDenied):
        accounts.unlock("1234")

    for _ in range(MAX_TRIES - 2):
        with pytest.raises(AccessDenied, match="Wrong PIN.$"):
            accounts.unlock("0000")
    with pytest.raises(AccessDenied, match="refused for"):
        accounts.unlock("0000")
    with pytest.raises(AccessDenied, match="Too many wrong PINs"):
        accounts.unlock("5678")  # even the right PIN, during the lockout
    clock.now += LOCKOUT_S + 1
    assert accounts.unlock("5678").name == "Eve"

    with pytest.raises(AccessDenied, match="Only an engineer may train"):
        require_engineer(OPERATOR_USER, "train a product")
    accounts_path(tmp_path).write_text("{not json", encoding="utf-8")
    with pytest.raises(AccessDenied, match="cannot be read .* delete it to set a new engineer PIN"):
        accounts.unlock("5678")


def test_one_station_per_data_folder(tmp_path):
    first = InstanceLock(tmp_path / "inspections.db").acquire()
    with pytest.raises(StoreError, match="already running on this station's data .* process"):
        InstanceLock(tmp_path / "inspections.db").acquire()
    InstanceLock(tmp_path / "other.db").acquire().release()  # another data folder is another station
    first.release()
    InstanceLock(tmp_path / "inspections.db").acquire().release()


def test_kept_frames_stay_within_their_limit_oldest_dropped_first(tmp_path):
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
    keeper = FrameKeeper(tmp_path / "frames", limit_bytes=1)
    size = keeper.keep(frame, "20240501-100000.000_cam#1.png").stat().st_size
    keeper = FrameKeeper(tmp_path / "frames", limit_bytes=int(2.5 * size))  # a restart: finds what is there
    for n in range(2, 6):
        keeper.keep(frame, f"20240501-10000{n}.000_cam#{n}.png")
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "20240501-100004.000_cam#4.png", "20240501-100005.000_cam#5.png"]
    assert keeper.used_bytes() == 2 * size
    name = frame_file_name("2024-05-01T10:00:00.123+00:00", "rtsp://cam/stream#12")
    assert re.fullmatch(r"\d{8}-\d{6}\.123_cam_stream#12\.png", name)  # the frame's one short name


def test_a_shift_is_a_stored_start_time(tmp_path):
    with ResultStore(tmp_path / "log.db") as store:
        assert services.shift_start(store) is None
        first = Changes(tmp_path, store, OPERATOR_USER).new_shift()
        second = Changes(tmp_path, store, User("Eve", ENGINEER)).new_shift()
        assert services.shift_start(store) == second >= first
        events = store.events(STATION)
        assert [(e.kind, e.old, e.new, e.user) for e in events] == [
            ("shift", first, second, "Eve (engineer)"), ("shift", None, first, "operator")]


def test_the_display_check_names_each_missing_library_and_its_package(tmp_path, monkeypatch):
    text = display.explain(["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfoo.so.3"])
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in text and "provides libfoo.so.3" in text
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert display.check() is None  # no X11 window: nothing to check
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    assert display.uses_x11() == sys.platform.startswith("linux")


@pytest.fixture
def xcb_plugin() -> Path:
    if not sys.platform.startswith("linux") or not shutil.which("ldd"):
        pytest.skip("Linux with ldd")
    plugins = [p for p in display.qt_libraries() if p.name == "libqxcb.so"]
    if not plugins:
        pytest.skip("no X11 platform plugin in this Qt")
    return plugins[0]


def test_a_library_missing_on_this_machine_is_found_and_named(xcb_plugin, tmp_path):
    # The real plugin, made to need a library no machine has: what a fresh desktop looks like.
    # It stays two folders below Qt's lib folder, where its run path looks for Qt.
    qt = xcb_plugin.parent.parent.parent
    (tmp_path / "lib").symlink_to(qt / "lib")
    copy = tmp_path / "plugins" / "platforms" / "libqxcb.so"
    copy.parent.mkdir(parents=True)
    data = xcb_plugin.read_bytes()
    assert data.count(b"libxcb-icccm.so.4\0") == 1
    copy.write_bytes(data.replace(b"libxcb-icccm.so.4\0", b"libxcb-icccm.so.9\0"))
    missing = display.missing_libraries([copy])
    assert "libxcb-icccm.so.9" in missing
    assert "libxcb-icccm.so.9" in display.explain(missing)


def test_the_readme_lists_every_system_package_the_window_needs(xcb_plugin):
    import subprocess

    needed = set()
    for library in display.qt_libraries():
        out = subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=60).stdout
        needed |= {name for name in re.findall(r"^\s*(\S+)\s*=>", out, re.MULTILINE)
                   if re.match(r"lib(xcb|X11|xkb|GL|EGL|OpenGL|fontconfig|freetype|glib|gthread|dbus)", name)}
    assert needed and needed <= set(display.PACKAGES), needed - set(display.PACKAGES)
    readme = README.read_text(encoding="utf-8")
    assert all(package in readme for package in set(display.PACKAGES.values()))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_an_accounts_file_that_is_a_named_pipe_is_refused_not_waited_for(tmp_path):
    from inspector.users import AccessDenied, Accounts

    os.mkfifo(tmp_path / "accounts.json")
    with pytest.raises(AccessDenied, match="named pipe"):
        Accounts(tmp_path / "accounts.json").is_set_up()
