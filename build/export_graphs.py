"""Export the embedded backbone's ONNX graph that ships inside the package
(inspector/core/graphs/): one graph for every image size (height and width in multiples of 16),
and remove any other graph there. Run it after a change of the feature module, then commit the
graph; the test test_shipped_graph_equals_the_feature_module fails until then. Needs the export
extra:
    pip install -e '.[export]' && .venv/bin/python build/export_graphs.py"""
from __future__ import annotations

import sys

from inspector.core.features import EMBEDDED_BACKBONE, export_graph
from inspector.paths import SHIPPED_GRAPHS


def main() -> int:
    SHIPPED_GRAPHS.mkdir(parents=True, exist_ok=True)
    made = export_graph(EMBEDDED_BACKBONE, dest_dir=SHIPPED_GRAPHS)
    for stale in set(SHIPPED_GRAPHS.glob("*.onnx")) - {made}:
        stale.unlink()
        print(f"removed {stale.name}")
    print(f"exported {made.name} ({made.stat().st_size / 2**20:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
