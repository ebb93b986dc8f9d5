"""The operator's desktop application (Qt). `main(argv)` opens the main window."""
from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    models_dir = args.models_dir or default_models_dir()
    db = args.db or default_db_path(models_dir)
    start_log_file(Path(db).parent)  # where the workers' failures are kept

    from PySide6.QtWidgets import QApplication, QMessageBox

    from ..errors import StoreError
    from .window import MainWindow, apply_style

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Inspector")
    app.setOrganizationName("Inspector")
    apply_style(app)
    try:
        window = MainWindow(models_dir, db)
    except StoreError as exc:
        QMessageBox.critical(None, "Inspector", str(exc))
        return 2
    window.show()
    return app.exec()
