"""The operator's desktop application (Qt). `main(argv)` opens the main window."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..logfile import start_log_file
from ..paths import default_db_path, default_models_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inspector gui", description="Open the Inspector station window.")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help=f"folder of the products' models (default: {default_models_dir()})")
    parser.add_argument("--db", type=Path, default=None,
                        help="the result log (default: inspections.db beside the models folder)")
    parser.add_argument("--plant", metavar="URL", default=None,
                        help="ship the log to this plant database (default: $INSPECTOR_PLANT)")
    args = parser.parse_args(argv)
    models_dir = args.models_dir or default_models_dir()
    db = args.db or default_db_path(models_dir)
    start_log_file(Path(db).parent)  # where the workers' failures are kept

    from .display import check

    problem = check()
    if problem:  # Qt would abort, naming one library at best
        print(problem, file=sys.stderr)
        return 2

    from PySide6.QtWidgets import QApplication, QMessageBox

    from ..errors import PlantError, StoreError
    from ..plant import plant_url
    from ..instance import InstanceLock
    from .window import MainWindow, apply_style
    from .worker import Worker

    owns_app = QApplication.instance() is None  # False when embedded (the tests' application)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Inspector")
    app.setOrganizationName("Inspector")
    apply_style(app)
    lock = InstanceLock(db)
    try:
        lock.acquire()
        window = MainWindow(models_dir, db, plant_url(args.plant))
    except PlantError as exc:  # an address that cannot be used (a password in it)
        lock.release()
        QMessageBox.critical(None, "Inspector", str(exc))
        return 2
    except StoreError as exc:
        lock.release()
        if not show_first_instance(lock.path):  # started again while running: the first window comes up
            QMessageBox.critical(None, "Inspector", str(exc))
            return 2
        return 0
    server = listen_for_instances(lock.path, window)
    window.show()
    code = app.exec()
    server.close()
    lock.release()
    if owns_app and Worker.running:  # left behind in a call that cannot be interrupted: do not wait for it
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _server_name(lock_path: Path) -> str:
    """The local socket of the station holding this lock (one per data folder)."""
    import hashlib

    return "inspector-" + hashlib.sha256(str(Path(lock_path).resolve()).encode()).hexdigest()[:16]


def listen_for_instances(lock_path: Path, window):
    """Bring `window` to the front when Inspector is started again on the same data folder."""
    from PySide6.QtCore import Qt
    from PySide6.QtNetwork import QLocalServer

    name = _server_name(lock_path)
    server = QLocalServer(window)
    QLocalServer.removeServer(name)  # a socket file left by a crash; the lock says no one else serves it
    server.listen(name)

    def come_up():
        while (connection := server.nextPendingConnection()) is not None:
            connection.disconnectFromServer()
            window.setWindowState(window.windowState() & ~Qt.WindowState.WindowMinimized)
            window.show()
            window.raise_()
            window.activateWindow()
    server.newConnection.connect(come_up)
    return server


def show_first_instance(lock_path: Path, timeout_ms: int = 3000) -> bool:
    """Ask the running station on this data folder to show its window; False when none answers."""
    from PySide6.QtNetwork import QLocalSocket

    socket = QLocalSocket()
    socket.connectToServer(_server_name(lock_path))
    answered = socket.waitForConnected(timeout_ms)
    socket.abort()
    return answered
