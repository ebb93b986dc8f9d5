"""Export the embedded backbone's ONNX graphs that ship inside the package
(inspector/core/graphs/), one per image size the app offers, and remove any other graph there.
Run it after a change of the feature module, then commit the graphs; the test
test_shipped_graphs_equal_the_feature_module fails until then. Needs the export extra:
    pip install -e '.[export]' && .venv/bin/python build/export_graphs.py"""
from __future__ import annotations

import sys

from inspector.core.features import EMBEDDED_BACKBONE, SHIPPED_SIZES, export_graph
from inspector.paths import SHIPPED_GRAPHS


def main() -> int:
    SHIPPED_GRAPHS.mkdir(parents=True, exist_ok=True)
    made = [export_graph(EMBEDDED_BACKBONE, size, dest_dir=SHIPPED_GRAPHS) for size in SHIPPED_SIZES]
    for stale in set(SHIPPED_GRAPHS.glob("*.onnx")) - set(made):
        stale.unlink()
        print(f"removed {stale.name}")
    for path in made:
        print(f"exported {path.name} ({path.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
