"""`inspector self-test`: the whole station, headless, on generated parts in a temporary
folder: train, save and reload the model, inspect good, defective and corrupt images
through the line into a SQLite log, read the log back and check every verdict."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

from .core.model import Settings
from .core.model_store import load_model, save_model
from .core.scoring import Inspector
from .core.training import train
from .station import Station
from .store.results import ResultStore
from .synthetic import write_parts


def self_test(say: Callable[[str], None] = print) -> bool:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inspector-self-test-") as tmp:
        root = Path(tmp)
        good = write_parts(root / "good", 25, seed=0)
        model, _ = train("self-test", good, Settings())
        save_model(model, root / "models")
        model = load_model(root / "models", "self-test")
        say(f"trained on {len(good)} good images: memory bank {len(model.memory_bank)}, "
            f"threshold {model.threshold:.3f}")
        line = root / "line"
        expected = {p.name: "OK" for p in write_parts(line, 4, seed=1000)}
        for defect, seed in (("scratch", 2000), ("stain", 3000)):
            expected |= {p.name: "NG" for p in write_parts(line, 4, defect, seed=seed)}
        (line / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
        expected["corrupt.png"] = "ERROR"
        with ResultStore(root / "inspections.db") as store:
            station = Station(Inspector(model), store, "folder")
            for outcome in station.inspect_files(sorted(line.iterdir())):
                r = outcome.record
                say(f"  {r.verdict:5} {Path(r.image_path).name}"
                    + (f"  score {r.score:.2f}" if r.score is not None else f"  {r.error}"))
            logged = {Path(r.image_path).name: r.verdict for r in store.query(product="self-test")}
    wrong = sorted(name for name, verdict in expected.items() if logged.get(name) != verdict)
    for name in wrong:
        say(f"FAILED {name}: expected {expected[name]}, logged {logged.get(name)}")
    ok = not wrong and len(logged) == len(expected)
    say(f"self-test {'passed' if ok else 'FAILED'}: {len(logged)} verdicts logged and read back, "
        f"{len(wrong)} wrong, {time.perf_counter() - started:.1f} s")
    return ok
