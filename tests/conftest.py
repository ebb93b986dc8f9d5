"""Shared test setup: the Qt tests run without a display; permission tests run as root too;
windows of the desktop application on a trained product."""
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest

from inspector.users import ENGINEER, User

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

NOBODY = 65534
PRODUCT = "Disc"
PIN = "2468"  # the engineer's PIN of the test stations
ENGINEER_USER = User("Eve", ENGINEER)  # the engineer of the test stations, as after the PIN
WAIT = 120_000  # ms: generous, for a loaded 2-core machine (a wait ends as soon as its condition holds)


@pytest.fixture
def open_tmp():
    """A temporary folder that every user may enter and write (tmp_path is private to its
    owner, so an unprivileged child could not reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="inspector-test-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_unprivileged(check, *args) -> None:
    """Run `check(*args)` where file permissions apply: in this process for a normal user;
    as root (which ignores permissions, and is what CI runs as) in a forked child that
    drops to the user 'nobody'. A failure in the child fails the test with its traceback.
    The child only uses what is already imported and files under an `open_tmp` folder."""
    if os.name == "nt":
        pytest.skip("POSIX permissions")
    if os.geteuid() != 0:
        check(*args)
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        status, report = 0, b""
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check(*args)
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            status, report = 1, traceback.format_exc().encode()
        os.write(write, report)
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        pytest.fail(f"as user nobody:\n{report}", pytrace=False)


def copy_models(source: Path, dest: Path) -> Path:
    """Copy a models folder to another station folder, with the key that signed its models
    (without it the copy is another station's, whose models this one refuses)."""
    shutil.copytree(source, dest)
    key = Path(os.path.abspath(source)).parent / "station.key"  # inspector.signing.key_path
    if key.exists():
        shutil.copy2(key, Path(os.path.abspath(dest)).parent / key.name)
    return dest


def known_defects_category(root: Path, size: int = 128) -> Path:
    """A small MVTec-layout category of generated parts: scratches and stains, with masks."""
    import cv2
    import numpy as np

    from inspector.data.images import save_image
    from inspector.synthetic import make_part

    for sub in ("train/good", "test/good", "test/scratch", "test/stain"):
        (root / sub).mkdir(parents=True)
    for i in range(12):
        save_image(root / "train" / "good" / f"{i:03d}.png", make_part(i, size))
    for i in range(4):
        save_image(root / "test" / "good" / f"{i:03d}.png", make_part(100 + i, size))
    for kind in ("scratch", "stain"):
        for i in range(6):
            seed = 200 + i
            image = make_part(seed, size, kind)
            mask = (np.abs(image.astype(int) - make_part(seed, size).astype(int)).max(-1) > 40).astype(np.uint8) * 255
            save_image(root / "test" / kind / f"{i:03d}.png", image)
            (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "ground_truth" / kind / f"{i:03d}_mask.png"), mask)
    return root


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """A models folder with PRODUCT trained (by the engine) on 20 generated good parts."""
    from inspector.core.model import Settings
    from inspector.core.model_store import save_model
    from inspector.core.training import train
    from inspector.synthetic import write_parts

    root = tmp_path_factory.mktemp("trained")
    model, _ = train(PRODUCT, write_parts(root / "good", 20), Settings())
    save_model(model, root / "models")
    return root / "models"


@pytest.fixture
def open_window(qtbot, tmp_path):
    """Opens main windows on tmp_path's result log, with QSettings kept in tmp_path, on a
    station whose engineer PIN is set, unlocked as the engineer unless `engineer` is False;
    closes them at the end (as the operator would: a closed window stops its workers)."""
    from PySide6.QtCore import QSettings

    from inspector.app.window import MainWindow
    from inspector.users import Accounts, accounts_path

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    accounts = Accounts(accounts_path(tmp_path))
    if not accounts.is_set_up():
        accounts.set_engineer("Eve", PIN)
    windows = []

    def open_(models_dir, engineer: bool = True, plant_url: str | None = None):
        window = MainWindow(models_dir, tmp_path / "inspections.db", plant_url)
        qtbot.addWidget(window)
        windows.append(window)
        window.show()
        if engineer:
            window.session.unlock(PIN)
        return window

    yield open_
    for window in windows:
        window.close()


@pytest.fixture
def line_window(open_window, trained_models, tmp_path, qtbot):
    """A window on a copy of the trained product, its model loaded, on the Monitor tab."""
    models = tmp_path / "models"
    copy_models(trained_models, models)
    window = open_window(models)
    qtbot.waitUntil(lambda: window.session.model is not None, timeout=WAIT)
    window.tabs.setCurrentWidget(window.monitor)
    return window


@pytest.fixture
def answer_box():
    """answer(button, seen): answer the next message box with `button` as soon as it is up,
    keeping its text in `seen` (gives up after WAIT ms)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    def answer(button, seen: list) -> None:
        def look(left: int = WAIT // 20) -> None:
            box = QApplication.activeModalWidget()
            if isinstance(box, QMessageBox):
                seen.append(box.text())
                box.button(button).click()
            elif left:
                QTimer.singleShot(20, lambda: look(left - 1))

        QTimer.singleShot(0, look)

    return answer
