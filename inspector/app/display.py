"""Can the window open on this desktop? On Linux, Qt's X11 platform plugin needs system
libraries that a fresh desktop may lack; Qt then aborts naming only one of them. This looks
before Qt does and names every missing library with the package that provides it.

Plain Python (ctypes and ldd): it runs before any Qt widget exists."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# library -> Debian/Ubuntu package: what Qt's xcb plugin and QtGui load (see the README)
PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-util.so.1": "libxcb-util1", "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-shm.so.0": "libxcb-shm0", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0", "libxcb-xkb.so.1": "libxcb-xkb1", "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6", "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0", "libGL.so.1": "libgl1", "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0", "libGLX.so.0": "libglx0", "libGLdispatch.so.0": "libglvnd0",
    "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6", "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0", "libdbus-1.so.3": "libdbus-1-3",
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s*=>\s*not found", re.MULTILINE)
_CANNOT_OPEN = re.compile(r"(\S+\.so[.\d]*): cannot open shared object file")


def uses_x11() -> bool:
    """Whether Qt will use its X11 (xcb) plugin: Linux, not told otherwise, not on Wayland."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if not sys.platform.startswith("linux"):
        return False
    if platform:
        return platform.startswith("xcb")
    return not (os.environ.get("WAYLAND_DISPLAY") and os.environ.get("XDG_SESSION_TYPE") == "wayland")


def qt_libraries() -> list[Path]:
    """The Qt files that must load for a window: QtGui and the X11 platform plugin."""
    import PySide6  # the package only: no Qt library is loaded by this

    qt = Path(PySide6.__file__).parent / "Qt"
    return [p for p in (*sorted((qt / "lib").glob("libQt6Gui.so*"))[:1],
                        qt / "plugins" / "platforms" / "libqxcb.so") if p.is_file()]


def missing_libraries(files: list[Path]) -> list[str]:
    """System libraries that `files` need and this machine lacks (empty when they load)."""
    missing: list[str] = []
    for path in files:
        try:
            ctypes.CDLL(str(path))
            continue
        except OSError as exc:
            reason = str(exc)
        ldd = shutil.which("ldd")
        found = []
        if ldd:
            out = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=30).stdout
            found = _NOT_FOUND.findall(out)
        if not found:  # no ldd: the loader names the first library it missed
            found = _CANNOT_OPEN.findall(reason) or [reason]
        missing += [name for name in found if name not in missing]
    return missing


def explain(missing: list[str]) -> str:
    """What to tell the person starting the window."""
    packages = sorted({PACKAGES[name] for name in missing if name in PACKAGES})
    unknown = [name for name in missing if name not in PACKAGES]
    text = f"The Inspector window cannot open: this Linux desktop lacks the system libraries {', '.join(missing)}."
    if packages:
        text += f"\nInstall them (Debian/Ubuntu) with:\n    sudo apt-get install {' '.join(packages)}"
    if unknown:
        text += f"\nFind the package that provides {', '.join(unknown)} for this system."
    return text + "\n(The command line works without them: inspector --help.)"


def check() -> str | None:
    """None when the window can open here, else the message naming what is missing."""
    if not uses_x11():
        return None
    if not os.environ.get("QT_QPA_PLATFORM") and not os.environ.get("DISPLAY"):
        return ("The Inspector window needs a desktop, and no display is set (DISPLAY is empty). Start it "
                "from the desktop session; the command line works without one: inspector --help.")
    missing = missing_libraries(qt_libraries())
    return explain(missing) if missing else None
