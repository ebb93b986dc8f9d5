"""The headless command line: the same services as the desktop application.

Exit codes: 0 every image OK, 1 at least one image NG, 2 an error (bad arguments, no model,
an image that could not be inspected), 130 interrupted."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

from . import __version__, paths
from .core.backbones import BACKBONES
from .core.memory_bank import SAMPLERS
from .core.model import Settings
from .errors import InspectorError

EXIT_OK, EXIT_NG, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class ProgressLine:
    """One self-overwriting progress line on stderr: stage, percent, time remaining."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.stage, self.started, self.last = stream, None, 0.0, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.started = stage, now
        elif now - self.last < 0.2 and done < total:
            return
        self.last = now
        eta = (now - self.started) / done * (total - done) if done else 0.0
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{stage}: {done}/{total} ({100 * done // max(total, 1)}%)"
                          f"{f', {eta:.0f} s left' if done < total else ''}   {end}")
        self.stream.flush()


def _settings(args) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name, None) is not None}
    return Settings(**values)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    d = Settings()
    p.add_argument("--backbone", choices=list(BACKBONES), default=d.backbone)
    p.add_argument("--backbone-weights", dest="weights", type=lambda p: str(Path(p).resolve()),
                   help="path of the backbone's weight file (remembered by the model)")
    p.add_argument("--sampling-ratio", type=float, default=d.sampling_ratio,
                   help=f"fraction of patch features kept in the memory bank (default {d.sampling_ratio})")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=d.sampler)
    p.add_argument("--sigma", type=float, default=d.sigma,
                   help=f"sensitivity k: threshold = mean + k*std of held-out good scores (default {d.sigma})")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="cpu", help="cpu (ONNX Runtime), cuda or mps (torch)")


def _open_store(args):
    from .store.results import ResultStore

    return ResultStore(args.db)


def _load_inspector(args):
    from .core.model import load_model
    from .core.scoring import Inspector

    return Inspector(load_model(args.models_dir, args.product), getattr(args, "device", "cpu"))


def _print_outcome(outcome) -> None:
    r = outcome.record
    if r.verdict == "ERROR":
        line = f"ERROR {r.image_path}: {r.error}"
    else:
        line = (f"{r.verdict:5} score {r.score:8.3f}  threshold {r.threshold:8.3f}  "
                f"{len(r.regions)} region(s)  {r.latency_ms:6.1f} ms  {r.image_path}")
    print(line, flush=True)
    if outcome.log_error:
        print(f"WARNING {outcome.log_error}", file=sys.stderr, flush=True)


def _run_line(args, source: str, run, limit: int = 0) -> int:
    """Run a line loop until it ends, `limit` frames are done, or Ctrl-C; return the exit
    code from the verdicts."""
    from .station import Station

    inspector = _load_inspector(args)
    verdicts: list[str] = []
    stop = threading.Event()

    def on_outcome(outcome):
        verdicts.append(outcome.record.verdict)
        _print_outcome(outcome)
        if limit and len(verdicts) >= limit:
            stop.set()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _open_store(args) as store:
        station = Station(inspector, store, source, getattr(args, "sort", False), getattr(args, "archive", None))
        try:
            run(station, stop, on_outcome)
        except KeyboardInterrupt:
            stop.set()
    n = len(verdicts)
    print(f"{n} inspected: {verdicts.count('OK')} OK, {verdicts.count('NG')} NG, "
          f"{verdicts.count('ERROR')} error(s)", file=sys.stderr)
    if "ERROR" in verdicts:
        return EXIT_ERROR
    return EXIT_NG if "NG" in verdicts else EXIT_OK


def cmd_train(args) -> int:
    from .core.model import save_model
    from .core.training import train
    from .data.images import list_images

    images = list_images(args.good_dir)
    print(f"Training '{args.product}' on {len(images)} good image(s) from {args.good_dir}", file=sys.stderr)
    model, good = train(args.product, images, _settings(args), ProgressLine(), None, args.device)
    for path, reason in good.skipped:
        print(f"SKIPPED {reason}", file=sys.stderr)
    folder = save_model(model, args.models_dir)
    print(f"Saved {folder}: memory bank {len(model.memory_bank)} patches from {model.counts['bank_images']} "
          f"images, threshold {model.threshold:.3f} (sigma {model.settings.sigma}: expected false rejects "
          f"{model.calibration.false_reject_rate(model.threshold):.1%}, from {model.counts['calibration_images']} "
          f"good images scored against banks without them, {model.calibration.method})")
    return EXIT_OK


def cmd_inspect(args) -> int:
    from .data.images import list_images

    files: list[Path] = []
    for p in map(Path, args.paths):
        files += list_images(p) if p.is_dir() else [p]
    source = "folder" if any(Path(p).is_dir() for p in args.paths) else "file"

    def run(station, stop, on_outcome):
        done = 0
        for outcome in station.inspect_files(files, stop):
            on_outcome(outcome)
            done += 1
        if done < len(files) and not stop.is_set():
            print(f"{len(files) - done} file(s) already in the log for '{args.product}', skipped",
                  file=sys.stderr)
    return _run_line(args, source, run)


def cmd_watch(args) -> int:
    from .sources.folder import FolderWatcher
    from .station import watch_folder

    def run(station, stop, on_outcome):
        with FolderWatcher(args.folder, settle_s=args.settle) as watcher:
            print(f"Watching {args.folder} for '{args.product}' (Ctrl-C to stop)", file=sys.stderr)
            watch_folder(station, watcher, stop, on_outcome)
    return _run_line(args, "folder", run)


def cmd_camera(args) -> int:
    from .sources.camera import Camera
    from .station import watch_camera

    def on_status(status, error):
        print(f"camera {args.source}: {status}{f' ({error})' if error else ''}", file=sys.stderr)

    def run(station, stop, on_outcome):
        with Camera(args.source) as camera:
            watch_camera(station, camera, stop, on_outcome, 1.0 / args.rate if args.rate else 0.0, on_status)
    return _run_line(args, "camera", run, args.count)


def cmd_models(args) -> int:
    from .core.model import list_models

    models = list_models(args.models_dir)
    if not models:
        print(f"No models in {args.models_dir}. Train one with: inspector train GOOD_DIR --product NAME")
    for m in models:
        if "error" in m:
            print(f"{m['product']}: DAMAGED: {m['error']}")
            continue
        s = m["settings"]
        print(f"{m['product']}: threshold {m['threshold']:.3f} (sigma {s['sigma']}), {s['backbone']} "
              f"{s['image_size']} px, {s['sampler']} {s['sampling_ratio']}, memory bank "
              f"{m['counts']['memory_bank']}, {m['counts']['good_images']} good images, created {m['created']}, "
              f"id {m['model_id']}")
    return EXIT_OK


def cmd_history(args) -> int:
    with _open_store(args) as store:
        filters = dict(product=args.product, verdict=args.verdict, since=args.since, until=args.until)
        if args.csv:
            n = store.export_csv(args.csv, **filters, limit=args.limit)
            print(f"Wrote {n} row(s) to {args.csv}", file=sys.stderr)
            return EXIT_OK
        for r in store.query(**filters, limit=args.limit):
            score = f"{r.score:8.3f}" if r.score is not None else "       -"
            print(f"{r.time}  {r.product}  {r.verdict:5} {score}  {r.image_path or ''}"
                  f"{'  ' + r.error if r.error else ''}")
        print(store.summary(args.product, args.since), file=sys.stderr)
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from .evaluation.report import evaluate, summary

    report, _ = evaluate(args.category_dir, _settings(args), args.plots, ProgressLine(), None, args.device)
    print(summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return EXIT_OK


def cmd_self_test(args) -> int:
    from .selftest import self_test

    return EXIT_OK if self_test(print) else EXIT_ERROR


def cmd_gui(args) -> int:
    from .app import main as gui_main

    return gui_main(["--models-dir", str(args.models_dir), "--db", str(args.db)])


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, default=None, help="folder of product models")
    common.add_argument("--db", type=Path, default=None, help="SQLite result log (default: beside the models folder)")
    product = argparse.ArgumentParser(add_help=False)
    product.add_argument("--product", required=True, help="product (recipe) name")
    line = argparse.ArgumentParser(add_help=False)
    line.add_argument("--device", default="cpu")
    line.add_argument("--archive", type=Path, help="save heatmap overlays under this folder")

    parser = argparse.ArgumentParser(prog="inspector", description="Inspector: visual inspection station.")
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", parents=[common, product], help="teach a product from a folder of good images")
    p.add_argument("good_dir", type=Path)
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("inspect", parents=[common, product, line], help="inspect image files or folders once")
    p.add_argument("paths", nargs="+")
    p.add_argument("--sort", action="store_true", help="move files into OK/ NG/ ERROR/ subfolders")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("watch", parents=[common, product, line], help="inspect every new image in a folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--sort", action="store_true", help="move files into OK/ NG/ ERROR/ subfolders")
    p.add_argument("--settle", type=float, default=0.5, help="seconds a new file must stay unchanged")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("camera", parents=[common, product, line], help="inspect frames of a camera or video")
    p.add_argument("source", help="camera index, stream URL or video file")
    p.add_argument("--rate", type=float, default=0.0, help="frames inspected per second (default: as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many frames")
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("models", parents=[common], help="list trained products")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("history", parents=[common], help="show or export the result log")
    p.add_argument("--product")
    p.add_argument("--verdict", choices=["OK", "NG", "ERROR"])
    p.add_argument("--since", help="ISO time or date")
    p.add_argument("--until", help="ISO time or date")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--csv", type=Path, help="write the rows to this CSV file")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("evaluate", parents=[common], help="train and evaluate on an MVTec-AD-layout category")
    p.add_argument("category_dir", type=Path)
    p.add_argument("--json", type=Path, help="write the metrics as JSON")
    p.add_argument("--plots", type=Path, help="write ROC curves, score histograms and a gallery here")
    _add_train_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("self-test", parents=[common], help="headless check of the whole station on generated parts")
    p.set_defaults(func=cmd_self_test)

    p = sub.add_parser("gui", parents=[common], help="open the desktop application (the default)")
    p.set_defaults(func=cmd_gui)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv or ["gui"])
    args.models_dir = args.models_dir or paths.default_models_dir()
    args.db = args.db or paths.default_db_path(args.models_dir)
    try:
        return args.func(args)
    except InspectorError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
