"""Soak of the watched line (watch --sort) against what a factory network share throws at
it (issue 19), bounded in time: for each fault, files in, rows logged, files lost (no row),
files logged twice.

    .venv/bin/python build/soak_line.py [--files 300] [--timeout 180]

Faults: a named pipe and a link to /dev/zero among the parts; a backlog whose files are
rewritten while they wait their turn; a result log that is read-only when the line starts
and writable again later (run as the user 'nobody' when started as root, who ignores file
permissions); a full disk under the result log and its journal (an 8 MB tmpfs: needs root
to mount, else skipped and said), freed again later."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fcntl  # noqa: E402,F401 - imported before dropping privileges (the stdlib may be unreadable then)

from inspector import services  # noqa: E402
from inspector.changes import Changes  # noqa: E402
from inspector.core.model import Settings  # noqa: E402
from inspector.core.model_store import load_model  # noqa: E402
from inspector.store.results import ResultStore  # noqa: E402
from inspector.synthetic import write_parts  # noqa: E402

PRODUCT = "part"
NOBODY = 65534


def watch(models: Path, db: Path, folder: Path, names: set[str], timeout: float, during=None) -> None:
    """Run the watched line with sorting until every file of `names` has a row and nothing
    is pending, or `timeout`; `during(done)` is called while it runs (done: outcomes so far)."""
    model = load_model(models, PRODUCT)
    stop, done = threading.Event(), []
    store = ResultStore(db)
    line = threading.Thread(target=services.run_line, kwargs=dict(
        models_dir=models, store=store, product=PRODUCT, kind="folder", target=folder, stop=stop,
        on_outcome=done.append, sort_files=True, settle_s=0.2, max_wait_s=5.0, model=model))
    line.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if during is not None:
                during(done)
            logged = {Path(r.image_path).name for r in _rows(store)}
            if names <= logged and store.pending_count() == 0 and store.unsaved_count() == 0:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        line.join()
        store.close()


def _rows(store: ResultStore):
    try:
        return store.query(PRODUCT)
    except Exception:  # noqa: BLE001 - a database that cannot be read now
        return []


def figures(fault: str, db: Path, names: set[str]) -> dict:
    with ResultStore(db) as store:
        rows = [Path(r.image_path).name for r in store.query(PRODUCT)]
    logged = set(rows) & names
    return {"fault": fault, "files in": len(names), "rows logged": len(rows), "lost": len(names - logged),
            "twice": len(rows) - len(set(rows))}


def pipe_and_device(root: Path, models: Path, n: int, timeout: float) -> dict:
    folder = root / "pipe"
    folder.mkdir()
    names = set()

    def arrive(done, state={"written": False}):
        if not state["written"]:
            state["written"] = True
            for i, path in enumerate(write_parts(folder, n - 2, seed=100)):
                names.add(path.name)
                if i == n // 3:
                    os.mkfifo(folder / "x.png")
                    (folder / "zero.png").symlink_to("/dev/zero")
    names |= {"x.png", "zero.png"} | {f"good_{100 + i:03d}.png" for i in range(n - 2)}
    watch(models, root / "pipe.db", folder, names, timeout, arrive)
    return figures("named pipe + /dev/zero link", root / "pipe.db", names)


def changing_while_queued(root: Path, models: Path, n: int, timeout: float) -> dict:
    folder = root / "backlog"
    parts = write_parts(folder, n, seed=400)  # a backlog, as after a restart
    names = {p.name for p in parts}
    originals = {p.name: p.read_bytes() for p in parts[::5]}

    def rewrite(done, state={"round": 0}):
        if state["round"] < 3:  # a slow writer touches every 5th file while it waits its turn
            state["round"] += 1
            for name, data in originals.items():
                try:
                    (folder / name).write_bytes(data + b"\0" * state["round"])  # zero padding after IEND: valid
                except OSError:
                    pass
    watch(models, root / "backlog.db", folder, names, timeout, rewrite)
    return figures("files changing while queued", root / "backlog.db", names)


def read_only_db(root: Path, models: Path, n: int, timeout: float) -> dict:
    work = root / "ro"
    work.mkdir()
    work.chmod(0o777)
    db = work / "log.db"
    model = load_model(models, PRODUCT)  # read with the key before dropping privileges
    local_models = work / "models"

    def run() -> None:
        ResultStore(db).close()
        db.chmod(0o444)
        folder = work / "line"
        folder.mkdir()
        names = {p.name for p in write_parts(folder, n, seed=700)}

        def fix(done):
            if len(done) >= n // 2 and db.stat().st_mode & 0o200 == 0:
                db.chmod(0o644)  # the operator fixes it while the line runs
        stop, done = threading.Event(), []
        store = ResultStore(db)
        line = threading.Thread(target=services.run_line, kwargs=dict(
            models_dir=local_models, store=store, product=PRODUCT, kind="folder", target=folder, stop=stop,
            on_outcome=done.append, sort_files=True, settle_s=0.2, max_wait_s=5.0, model=model))
        line.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fix(done)
            if len(done) >= n and store.pending_count() == 0:
                break
            time.sleep(0.2)
        stop.set()
        line.join()
        store.close()
        (work / "names").write_text("\n".join(sorted(names)))

    if os.geteuid() == 0:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                run()
            except BaseException as exc:  # noqa: BLE001
                print(f"read-only fault failed: {exc!r}", file=sys.stderr)
                code = 1
            os._exit(code)
        os.waitpid(pid, 0)
    else:
        run()
    names = set((work / "names").read_text().split()) if (work / "names").exists() else set()
    return figures("read-only result log, fixed while running", db, names)


def full_disk(root: Path, models: Path, n: int, timeout: float) -> dict | None:
    disk = root / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        print(f"full disk: skipped, cannot mount a small filesystem ({mounted.stderr.strip()})", file=sys.stderr)
        return None
    try:
        db = disk / "log.db"
        ResultStore(db).close()
        holder = ResultStore(db)  # keeps -wal and -shm in place
        with open(disk / "filler", "wb", buffering=0) as f:
            for size in (1 << 16, 4096, 1):
                try:
                    while f.write(b"x" * size):
                        pass
                except OSError:
                    pass
        folder = root / "full"
        names = {p.name for p in write_parts(folder, n, seed=900)}

        def free(done):
            if len(done) >= n // 2 and (disk / "filler").exists():
                (disk / "filler").unlink()  # space again
        watch(models, db, folder, names, timeout, free)
        holder.close()
        return figures("full disk under the log, freed while running", db, names)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="files per fault")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per fault at most")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="soak-line-"))
    root.chmod(0o755)
    try:
        models = root / "models"
        with ResultStore(root / "train.db") as store:
            Changes(models, store).train(PRODUCT, write_parts(root / "good", 20), Settings())
        results = []
        for fault in (pipe_and_device, changing_while_queued, read_only_db, full_disk):
            started = time.monotonic()
            result = fault(root, models, args.files, args.timeout)
            if result is not None:
                result["seconds"] = round(time.monotonic() - started)
                results.append(result)
                print(result, flush=True)
        print(f"\n{'fault':48} {'files in':>8} {'logged':>7} {'lost':>5} {'twice':>6} {'s':>4}")
        for r in results:
            print(f"{r['fault']:48} {r['files in']:8} {r['rows logged']:7} {r['lost']:5} {r['twice']:6} "
                  f"{r['seconds']:4}")
        return 0 if all(r["lost"] == 0 and r["twice"] == 0 for r in results) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
