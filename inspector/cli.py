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
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from . import __version__, paths
from .logfile import start_log_file
from .core.backbones import BACKBONES
from .core.memory_bank import SAMPLERS
from .core.model import Settings, describe_scale
from .core.roi import describe_roi
from .evaluation.methods import DEFAULT as DEFAULT_METHOD, METHODS
from .errors import InspectorError
from .common import text, yield_rate

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


def _checked(check):
    """An argparse type from a check of inspector.changes: a bad value is an argument
    error, said before any work."""
    def convert(text: str) -> float:
        from . import changes

        try:
            return getattr(changes, check)(float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        except InspectorError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = check.removeprefix("check_").replace("_", " ")
    return convert


class _OlderName(argparse.Action):
    """A flag under its older name: sets the new one's value and says what it is now called."""
    def __call__(self, parser, namespace, value, option_string=None):
        print(f"'{option_string}' is now called '--{self.dest}'.", file=sys.stderr)
        setattr(namespace, self.dest, value)


def _tolerance_option(p: argparse.ArgumentParser, default: float | None, help: str) -> None:
    check = _checked("check_tolerance")
    p.add_argument("--tolerance", type=check, default=default, metavar="K",
                   help=f"{help}: threshold = median + K robust spreads of the good images' scores against "
                        f"banks without them; higher, fewer parts rejected (formerly --sigma)")
    p.add_argument("--sigma", dest="tolerance", type=check, action=_OlderName, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)


def _at_least(low: float, kind=float):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if not value >= low:  # nan too
            raise argparse.ArgumentTypeError(f"must be {low:g} or more, not {text}")
        return value
    convert.__name__ = "value"
    return convert


def _settings(args, good_dir) -> Settings:
    """The training settings the arguments give; `--image-size N` (an older option) becomes the
    defect size that puts the good images' median shorter side at N pixels, and says so."""
    from .core.training import with_defect_size
    from .data.images import list_images

    values = {f.name: getattr(args, f.name) for f in fields(Settings)
              if f.name != "image_size" and getattr(args, f.name, None) is not None}
    settings = Settings(**values)
    if args.image_size is not None and settings.defect_size is None:
        settings = with_defect_size(settings, list_images(good_dir), args.image_size)
        print(f"--image-size {args.image_size} is now --defect-size {settings.defect_size:g} (the images keep "
              f"their aspect ratio; their median shorter side is inspected at {args.image_size} px)", file=sys.stderr)
    return settings


def _add_train_options(p: argparse.ArgumentParser) -> None:
    d = Settings()
    p.add_argument("--backbone", choices=list(BACKBONES), default=d.backbone)
    p.add_argument("--backbone-weights", dest="weights", type=lambda p: str(Path(p).resolve()),
                   help="path of the backbone's weight file (remembered by the model)")
    p.add_argument("--sampling-ratio", type=_checked("check_sampling_ratio"), default=d.sampling_ratio,
                   help=f"fraction of patch features kept in the memory bank (default {d.sampling_ratio})")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=d.sampler)
    _tolerance_option(p, d.tolerance, f"the tolerance (default {d.tolerance})")
    p.add_argument("--defect-size", type=_at_least(0.5), default=d.defect_size, metavar="PX",
                   help="the smallest defect to find, in the images' pixels: it decides the scale at which "
                        "the images are inspected (aspect ratio kept; large images in tiles). Default: "
                        "from the good images, their median shorter side / 32")
    p.add_argument("--image-size", type=_at_least(32, int), default=None, metavar="PX",
                   help="older name: the images' median shorter side at PX pixels (converted to --defect-size)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="cpu", help="cpu (ONNX Runtime), cuda or mps (torch)")


def _add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vit-weights", type=lambda p: str(Path(p).resolve()), metavar="FILE",
                   help="a torchvision ViT weight file, for vit-knn (none ships)")
    p.add_argument("--max-epochs", type=int, metavar="N",
                   help="at most this many epochs for the methods that train a network (default 40; they stop "
                        "earlier when their validation loss stops improving)")


def _open_store(args):
    from .store.results import ResultStore

    return ResultStore(args.db)


PIN_VARIABLE = "INSPECTOR_PIN"


def _accounts(args):
    """The station's engineer account: accounts.json beside the result log, as in the window."""
    from .users import Accounts, accounts_path

    return Accounts(accounts_path(Path(args.db).resolve().parent))


def _pin(what: str) -> str:
    """The engineer PIN, from INSPECTOR_PIN or asked on the terminal (refused without either)."""
    import getpass
    import os

    from .users import AccessDenied

    pin = os.environ.get(PIN_VARIABLE)
    if pin is None:
        if not sys.stdin.isatty():
            raise AccessDenied(f"Only an engineer may {what} on this station: set {PIN_VARIABLE} to the "
                               f"engineer PIN, or run this on a terminal to be asked for it.")
        pin = getpass.getpass(f"Engineer PIN to {what}: ")
    return pin


def _changes(args, store, kind: str):
    """The owner of changes (inspector.changes) for a change of `kind`, made by whoever the
    command line has: on a station with an engineer PIN the engineer (the PIN from `_pin`);
    without one nobody signed in (recorded under the OS login name). Checked before any work."""
    from .changes import KINDS, Changes

    accounts = _accounts(args)
    permission = KINDS[kind].permission
    user = accounts.unlock(_pin(permission)) if permission and accounts.is_set_up() else None
    changes = Changes(args.models_dir, store, user, accounts)
    changes.check(kind)
    return changes


def _print_outcome(outcome) -> None:
    r = outcome.record
    if r.verdict == "ERROR":
        line = f"ERROR {r.image_path}: {r.error}"
    else:
        line = (f"{r.verdict:5} score {r.score:8.3f}  threshold {r.threshold:8.3f}  "
                f"{len(r.regions)} region(s)  {r.latency_ms:6.1f} ms  {r.image_path}")
    print(line + ("" if outcome.safe else "  (NOT LOGGED yet)"), flush=True)
    if outcome.result is not None:  # what defect heads found, the regions accepted for their size
        from .services import findings_text

        for finding in filter(None, findings_text(outcome.result, None).split("\n")):
            print(f"      {finding}", flush=True)
    if outcome.log_error:
        print(f"WARNING {outcome.log_error}", file=sys.stderr, flush=True)


def _say(level: str, text: str) -> None:
    print(text if level == "info" else f"{level.upper()} {text}", file=sys.stderr, flush=True)


def _exit_code(verdicts: list[str]) -> int:
    if "ERROR" in verdicts:
        return EXIT_ERROR
    return EXIT_NG if "NG" in verdicts else EXIT_OK


def _stop_now() -> None:
    """A second Ctrl-C: stop at once, with the exit code of an interruption (every verdict
    printed so far is logged, or was printed as not logged)."""
    import os

    try:
        print("\ninterrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)


def _run_line(args, kind: str, target, limit: int = 0, **options) -> int:
    """Run the line until its source ends, `limit` frames are done, or Ctrl-C / SIGTERM
    (then the exit code is EXIT_INTERRUPTED); else the exit code follows the verdicts."""
    from .services import no_status, run_line

    verdicts: list[str] = []
    stop = threading.Event()
    interrupted = threading.Event()

    def on_outcome(outcome):
        verdicts.append(outcome.record.verdict)
        _print_outcome(outcome)
        if limit and len(verdicts) >= limit:
            stop.set()

    def interrupt(*_):
        """The item under way is finished, logged and printed; a second Ctrl-C stops at once."""
        if interrupted.is_set():
            _stop_now()
        interrupted.set()
        stop.set()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _open_store(args) as store, _line_io(args, store) as io:
            if io is not None:
                options |= io.line_options() | {"on_status": io.on_status(no_status)}
                on_outcome = io.on_outcome(on_outcome)
            shipper = _start_shipper(args, store)
            try:
                run_line(args.models_dir, store, args.product, kind, target, stop, on_outcome, _say,
                         sort_files=getattr(args, "sort", False), archive_dir=getattr(args, "archive", None),
                         device=args.device, **options)
            finally:
                if shipper is not None:
                    _stop_shipper(shipper)
    finally:
        for sig, handler in previous.items():  # once interrupted, another Ctrl-C until the end stops at once
            signal.signal(sig, (lambda *_: _stop_now()) if interrupted.is_set() else handler)
        if interrupted.is_set():  # and, once Python no longer runs handlers, cannot kill the exit either
            import atexit

            atexit.register(lambda: [signal.signal(sig, signal.SIG_IGN) for sig in previous])
    print(f"{len(verdicts)} inspected: {verdicts.count('OK')} OK, {verdicts.count('NG')} NG, "
          f"{verdicts.count('ERROR')} error(s)", file=sys.stderr)
    lost = store.unsaved_count()  # after closing: the last try to write them failed too
    if lost:
        print(f"error: {lost} verdict(s) could NOT be logged: neither the result log {store.path} nor "
              f"{store.journal_path} could be written (a full disk?). They are not recorded; their files "
              f"were left where they were. Free space there and inspect them again.", file=sys.stderr)
        return EXIT_ERROR
    if interrupted.is_set():
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _exit_code(verdicts)


def _plant_url(args, required: bool = False) -> str | None:
    from .plant import URL_VARIABLE, plant_url

    url = plant_url(getattr(args, "plant", None))
    if url is None and required:
        raise InspectorError(f"No plant database: give --plant postgresql://USER@HOST/DB or set {URL_VARIABLE}.")
    return url


def _start_shipper(args, store):
    """While the line runs, ship its log to the plant database (when one is given) and, with
    --follow, install the product's newly published model versions."""
    url = _plant_url(args)
    if url is None:
        return None
    from .plant import Shipper

    follow = [args.product] if getattr(args, "follow", False) else []
    changes = _changes(args, store, "install") if follow else None
    return Shipper(store, url, follow=follow, changes=changes, on_message=_say).start()


def _stop_shipper(shipper) -> None:
    from .plant import PlantError

    shipper.stop()
    try:
        shipper.ship()  # what the last items added
    except PlantError:
        pass
    finally:
        shipper.stop()
    print(shipper.status().describe(), file=sys.stderr)


def _when(value) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def cmd_plant(args) -> int:
    from . import plant

    action = getattr(args, "action", None) or "view"
    url = _plant_url(args, required=True)
    if action == "setup":
        plant.setup(url)
        print(f"The plant database {plant.where(url)} has the Inspector schema version {plant.SCHEMA_VERSION}.")
        return EXIT_OK
    if action == "models":
        for p in plant.published(url, args.product):
            print(f"{p.describe()}, {p.size} bytes: {p.change or '-'}")
        return EXIT_OK
    if action in ("ship", "status"):
        with _open_store(args) as store:
            shipper = plant.Shipper(store, url)
            try:
                if action == "ship":
                    print(f"{shipper.ship()} row(s) shipped.")
                status = shipper.check()
            finally:
                shipper.stop()
            print(status.describe())
        return EXIT_OK if status.connected else EXIT_ERROR
    if action in ("publish", "install"):
        with _open_store(args) as store:
            changes = _changes(args, store, action)
            if action == "publish":
                number = plant.publish(url, changes, args.product, args.version)
                print(f"Published '{args.product}' as plant version {number}.")
            else:
                model = plant.install(url, changes, args.product, args.version)
                print(f"Installed as version {model.version} of '{model.product}': {model.change}")
        return EXIT_OK
    view = plant.plant_view(url, args.hours, args.silent_after)
    print(f"Stations ({len(view.stations)}):")
    for s in view.stations:
        state = "SILENT" if s["silent"] else ("BEHIND" if s["behind"] else "ok")
        skew = s["clock_skew_s"]
        clock = f", clock off by {skew:+.0f} s" if skew is not None and abs(skew) > 60 else ""
        models = ", ".join(f"{p['product']} v{p['model_version']}" for p in s["products"]) or "-"
        print(f"  {s['station']:16} {state:6} last report {_when(s['last_seen'])}, {s['behind']} row(s) behind"
              f"{clock}; runs {models}")
    print(f"Since {_when(view.since)}, per station and product:")
    for c in view.counts:
        print(f"  {c['station']:16} {c['product']:16} {c['total']:8} inspected  {c['ok']:8} OK  {c['ng']:6} NG  "
              f"{c['error']:5} error(s)  yield {_percent(c['yield'])}  NG rate {_percent(c['ng_rate'])}")
    print("Per hour, all stations:")
    for h in view.hours:
        print(f"  {_when(h['hour'])}  {h['total']:8} inspected  yield {_percent(h['yield'])}  "
              f"NG rate {_percent(h['ng_rate'])}")
    return EXIT_OK


@contextmanager
def _line_io(args, store):
    """The line's OPC UA / Modbus servers and MQTT shipper, as `watch` / `camera` ask; None without."""
    from .lineio.line_io import LineIO, LineSettings

    settings = LineSettings(*(getattr(args, name, None) for name in ("opcua", "modbus", "mqtt")),
                            getattr(args, "station", None) or "", getattr(args, "plc_product_select", False))
    if not (settings.plc or settings.mqtt):
        yield None
        return
    with LineIO(settings, args.models_dir, store) as io:
        for line in io.status():
            _say("info", f"Line I/O: {line}")
        if settings.plc:
            _say("info", f"The line inspects a part per PLC trigger. {io.products_line}")
        yield io


def cmd_train(args) -> int:
    from .services import capture_good_frames, known_defects, score_defects, taught_dir, trained_text

    from .core.roi import roi_from_mask

    if args.good_dir is None and args.camera is None:
        print("error: give the folder of good images, or --camera SOURCE to take them from a camera",
              file=sys.stderr)
        return EXIT_ERROR
    with _open_store(args) as store:
        changes = _changes(args, store, "train")
        roi = roi_from_mask(args.roi) if args.roi else None
        images = args.good_dir
        if args.camera is not None:
            folder = taught_dir(args.models_dir, args.product)
            captured = capture_good_frames(args.camera, args.frames, folder, ProgressLine(), interval_s=args.every)
            print(f"Captured {len(captured)} frame(s) of good parts from {args.camera} into {folder}: every later "
                  f"training of '{args.product}' uses them (delete one there to leave it out).", file=sys.stderr)
            images = args.good_dir or captured
        print(f"Training '{args.product}' from {args.good_dir or f'{len(images)} camera frame(s)'}", file=sys.stderr)
        settings = _settings(args, args.good_dir or folder)
        model, good = changes.train(args.product, images, settings, ProgressLine(), None, args.device, roi=roi)
    for path, reason in good.skipped:
        print(f"SKIPPED {reason}", file=sys.stderr)
    s = model.settings
    print(f"Inspecting at {describe_scale(s.defect_size, s.image_size)}", file=sys.stderr)
    print(f"Saved '{model.product}' version {model.version}: memory bank {len(model.memory_bank)} patches from "
          f"{model.counts['bank_images']} images, threshold {model.threshold:.3f} (tolerance {model.settings.tolerance}, "
          f"from every one of {model.counts['calibration_images']} good images scored against a bank without it, "
          f"{model.calibration.method}); inspecting {describe_roi(model.roi)}")
    folder = known_defects(args.models_dir, model.product)
    defects = score_defects(model, folder, device=args.device) if folder else None
    print(f"On the line: {trained_text(model, defects)} See or change it with: inspector calibrate --product "
          f"'{model.product}'")
    return EXIT_OK


def cmd_train_defects(args) -> int:
    from .services import learnt_text

    with _open_store(args) as store:
        model = _changes(args, store, "learn").learn_defects(args.product, args.good_dir, args.defects_dir,
                                                             args.min_defect_area, args.mm_per_px, ProgressLine(),
                                                             None, args.device)
    print(learnt_text(model))
    return EXIT_OK


def _rate(model) -> str:
    return f"{model.calibration.false_reject_rate(model.threshold):.1%}"


def _renamed(args, old: str, new: str) -> None:
    """Say that the command the user typed under its older name is now called `new`."""
    if args.command == old:
        print(f"'inspector {old}' is now called 'inspector {new}'.", file=sys.stderr)


def cmd_region(args) -> int:
    from .services import load_model
    from .core.roi import roi_from_mask

    _renamed(args, "roi", "region")
    if (args.mask is None) == (not args.clear):
        print("error: give a mask image (white = inspect) or --clear to inspect the whole image", file=sys.stderr)
        return EXIT_ERROR
    with _open_store(args) as store:
        changes = _changes(args, store, "region")
        before = load_model(args.models_dir, args.product)
        roi = None if args.clear else roi_from_mask(args.mask)
        model = changes.set_region(args.product, roi)
    print(f"'{model.product}' version {model.version}: {model.change}; threshold {before.threshold:.4g} -> "
          f"{model.threshold:.4g}, expected false rejects {_rate(before)} -> {_rate(model)}")
    return EXIT_OK


def cmd_defect(args) -> int:
    """'This part is a defect': the files join the product's known defects (no model changes)."""
    files = _files(args.paths)
    with _open_store(args) as store:
        copies = _changes(args, store, "defect").add_known_defects(args.product, files)
    print(f"Added {len(copies)} image(s) to the known defects of '{args.product}' "
          f"({copies[0].parent}); 'inspector calibrate --product {args.product}' scores them.")
    return EXIT_OK


def cmd_teach(args) -> int:
    from .services import taught_dir

    if args.defect:
        print("'inspector teach --defect' is now called 'inspector defect'.", file=sys.stderr)
        return cmd_defect(args)
    files = _files(args.paths)
    with _open_store(args) as store:
        taught = _changes(args, store, "teach").teach(args.product, files, args.device, extractors={})
    before, model = taught.before, taught.model
    for path, reason in taught.skipped:
        print(f"SKIPPED {reason}", file=sys.stderr)
    for path, old, new in zip(taught.paths, taught.scores_before, taught.scores_after):
        print(f"{'OK' if new < model.threshold else 'NG':5} score {old:8.3f} -> {new:8.3f}  {text(str(path))}")
    print(f"'{model.product}' version {model.version}: {model.change}; threshold {before.threshold:.4g} -> "
          f"{model.threshold:.4g}, expected false rejects {_rate(before)} -> {_rate(model)} "
          f"({len(model.calibration.image_scores)} good calibration images)")
    print(f"Taught images kept in {taught_dir(args.models_dir, model.product)}: every later training and "
          f"rebuild of '{model.product}' uses them (delete one there to leave it out).")
    return EXIT_OK


def cmd_rollback(args) -> int:
    from .services import load_model

    with _open_store(args) as store:
        changes = _changes(args, store, "rollback")
        before = load_model(args.models_dir, args.product)
        model = changes.rollback(args.product, args.version)
    print(f"'{model.product}' version {model.version}: {model.change}; threshold {before.threshold:.4g} -> "
          f"{model.threshold:.4g}")
    return EXIT_OK


def _files(paths: list[str]) -> list[Path]:
    from .services import image_files

    return image_files(paths)


def cmd_inspect(args) -> int:
    files = _files(args.paths)
    if args.again:
        return _inspect_again(args, files)
    return _run_line(args, "file", files)


def _inspect_again(args, files: list[Path]) -> int:
    """Inspect files with the product's current model, logged or not, and log nothing."""
    from .errors import describe
    from .services import load_model, reinspect

    model = load_model(args.models_dir, args.product)
    print(f"Inspecting again with '{model.product}' model version {model.version} (nothing is logged)",
          file=sys.stderr)
    extractors: dict = {}
    verdicts = []
    for path in files:
        try:
            _, result, _ = reinspect(args.models_dir, args.product, path, model, args.device, extractors)
        except Exception as exc:  # noqa: BLE001 - one file's problem, reported with it
            verdicts.append("ERROR")
            print(f"ERROR {text(str(path))}: {describe(exc)}", flush=True)
            continue
        verdicts.append(result.verdict)
        print(f"{result.verdict:5} score {result.score:8.3f}  threshold {result.threshold:8.3f}  "
              f"{len(result.regions)} region(s)  {text(str(path))}", flush=True)
    return _exit_code(verdicts)


def cmd_watch(args) -> int:
    return _run_line(args, "folder", args.folder, settle_s=args.settle, max_wait_s=args.max_wait)


def cmd_camera(args) -> int:
    return _run_line(args, "camera", args.source, args.count, interval_s=1.0 / args.rate if args.rate else 0.0)


def cmd_calibrate(args) -> int:
    from .services import known_defects, load_model, propose_threshold, rates, score_defects

    if args.defects is not None and not args.defects.is_dir():
        print(f"error: the folder of known defects {args.defects} does not exist", file=sys.stderr)
        return EXIT_ERROR
    if args.tolerance is not None:
        with _open_store(args) as store:
            changes = _changes(args, store, "tolerance")
            before = load_model(args.models_dir, args.product)
            model = changes.set_tolerance(args.product, args.tolerance)
        print(f"'{model.product}' version {model.version}: tolerance {before.settings.tolerance:g} -> "
              f"{model.settings.tolerance:g}, threshold {before.threshold:.4g} -> {model.threshold:.4g}")
    else:
        model = load_model(args.models_dir, args.product)
        print(f"'{model.product}' version {model.version}: threshold {model.threshold:.4g} at tolerance "
              f"{model.settings.tolerance:g}")
    folder = args.defects or known_defects(args.models_dir, args.product)
    if folder is None:
        print(f"Expected false rejects: {rates(model, model.threshold).false_rejects_text()}; escapes unknown "
              f"(give --defects, or add known defects with: inspector defect)")
        return EXIT_OK
    if args.defects is None:
        print(f"Known defects of '{model.product}': {folder}")

    def report(done, total, path, score, problem):
        if problem:
            print(f"SKIPPED {problem}", file=sys.stderr)
        else:
            print(f"{score:8.3f}  {text(str(path))}")

    scores = score_defects(model, folder, report, device=args.device)
    print(f"Scored {scores.describe()} in {folder}")
    now = rates(model, model.threshold, scores)
    print(f"At threshold {model.threshold:.4g}: expected false rejects {now.false_rejects_text()}; escapes "
          f"{now.escapes_text()}")
    if not scores.scores:
        print(f"No known defect image could be scored in {folder}.", file=sys.stderr)
        return EXIT_ERROR
    proposal = propose_threshold(model, scores)
    print(f"Proposed: {proposal.describe()}; calibrate --tolerance {proposal.tolerance:.2f} to use it")
    if proposal.warning:
        print(f"WARNING {proposal.warning}", file=sys.stderr)
    return EXIT_OK


def cmd_rebuild(args) -> int:
    with _open_store(args) as store:
        model, _ = _changes(args, store, "bank").rebuild_bank(args.product, args.sampling_ratio, images=args.good_dir,
                                                              progress=ProgressLine(), device=args.device)
    print(f"'{model.product}' version {model.version}: {model.change}; memory bank {len(model.memory_bank)} "
          f"patches, threshold {model.threshold:.4g}")
    return EXIT_OK


def cmd_products(args) -> int:
    if args.action == "delete" and not args.yes:
        print(f"Deleting '{args.name}' removes every version of its model (its history stays in "
              f"the log). Add --yes to delete it.", file=sys.stderr)
        return EXIT_ERROR
    with _open_store(args) as store:
        changes = _changes(args, store, args.action)
        if args.action == "create":
            changes.create_product(args.name)
            print(f"Created '{args.name}'; train it with: inspector train GOOD_DIR --product '{args.name}'")
        elif args.action == "rename":
            new = changes.rename_product(args.name, args.new_name)
            print(f"Renamed '{args.name}' to '{new}'; its history in the log moved with it.")
        else:
            changes.delete_product(args.name)
            print(f"Deleted '{args.name}'; its history stays in the log.")
    return EXIT_OK


def cmd_models(args) -> int:
    from .services import products, versions
    from .core.product_numbers import product_numbers

    if args.resign:
        return _resign(args)
    if args.product:
        kept = versions(args.models_dir, args.product)
        if not kept:
            print(f"'{args.product}' has no model in {args.models_dir}.")
        for m in kept:
            if "error" in m:
                print(f"version {m['version']}: {m['error']}")
            else:
                print(f"version {m['version']}  {m['created']}  threshold {m['threshold']:.4g} (tolerance "
                      f"{m['settings']['tolerance']:g}), memory bank {m['counts'].get('memory_bank')}, id "
                      f"{m['model_id']}: {m.get('change') or '-'}")
        return EXIT_OK
    models = products(args.models_dir)
    if not models:
        print(f"No models in {args.models_dir}. Train one with: inspector train GOOD_DIR --product NAME")
    numbers = product_numbers(args.models_dir)
    for m in models:
        name = m["product"] + (f" (number {numbers[m['product']]})" if m["product"] in numbers else "")  # PLC select
        if "error" in m:
            print(f"{name}: {m['error']}")
            continue
        s = m["settings"]
        print(f"{name}: version {m['version']}, threshold {m['threshold']:.3f} (tolerance {s['tolerance']}), "
              f"{s['backbone']}, {describe_scale(s.get('defect_size'), s.get('image_size'))}, "
              f"{s['sampler']} {s['sampling_ratio']}, memory bank "
              f"{m['counts'].get('memory_bank')}, {m['counts'].get('good_images')} good images, "
              f"created {m['created']}, id {m['model_id']}")
    return EXIT_OK


def _resign(args) -> int:
    from .changes import describe_model

    if not args.product:
        print("error: --resign needs --product (and --version, else the newest)", file=sys.stderr)
        return EXIT_ERROR
    with _open_store(args) as store:
        old, saved = _changes(args, store, "resign").resign(args.product, args.version)
    print(f"Signed '{saved.product}' {describe_model(old)}\n  as version {saved.version} (id {saved.model_id}); "
          f"the line uses it from its next part.")
    return EXIT_OK


def cmd_key(args) -> int:
    with _open_store(args) as store:
        changes = _changes(args, store, f"{args.action} key")
        if args.action == "export":
            fingerprint = changes.export_key(args.file)
            print(f"Wrote this station's signing key ({fingerprint}) to {args.file}. Whoever holds it can sign "
                  f"models for every station that imports it: carry it on a trusted medium, import it on the "
                  f"other stations (inspector key import), then delete the file.")
            return EXIT_OK
        fingerprint, signed = changes.import_key(args.file, args.resign)
    print(f"This station now signs and verifies models with the key {fingerprint} of {args.file}.")
    for model in signed:
        print(f"Signed '{model.product}' with it as version {model.version}: {model.change}")
    return EXIT_OK


def cmd_engineer(args) -> int:
    import getpass

    from .changes import Changes
    from .files import read_regular

    accounts = _accounts(args)
    had = accounts.engineer_name()
    if args.name is None:
        print(f"Engineer: {had}" if had else "No engineer PIN is set on this station: anyone may change models "
                                             "(inspector engineer NAME sets one).")
        return EXIT_OK
    old_pin = _pin("change the engineer PIN") if had else None
    if args.pin_file is not None:
        try:
            pin = (read_regular(args.pin_file, 4096).decode("utf-8").splitlines() or [""])[0]
        except (OSError, UnicodeDecodeError) as exc:  # a pipe or a device file too, never blocking
            raise InspectorError(f"The PIN file {args.pin_file} cannot be read ({exc}).") from exc
    elif not sys.stdin.isatty():
        raise InspectorError("Give the new PIN in a file (--pin-file FILE), or run this on a terminal to be asked.")
    else:
        pin = getpass.getpass("New engineer PIN: ")
        if getpass.getpass("New engineer PIN again: ") != pin:
            raise InspectorError("The two PINs differ: type the same PIN twice.")
    with _open_store(args) as store:
        user = Changes(args.models_dir, store, accounts=accounts).set_engineer(args.name, pin, old_pin)
    print(f"Engineer PIN {'changed' if had else 'set'} for {user.name}: only the engineer changes models and "
          f"products on this station now.")
    return EXIT_OK


def cmd_history(args) -> int:
    with _open_store(args) as store:
        if args.events:
            for e in store.events(args.product, args.since, args.until, args.limit):
                print(f"{e.time}  {e.product}  {e.kind:11} {e.user}: {e.old or '-'} -> {e.new or '-'}"
                      f"{'  (' + e.detail + ')' if e.detail else ''}")
            return EXIT_OK
        filters = dict(product=args.product, verdict=args.verdict, since=args.since, until=args.until)
        if args.csv:
            n = store.export_csv(args.csv, **filters, limit=args.limit)
            print(f"Wrote {n} row(s) to {args.csv}", file=sys.stderr)
            return EXIT_OK
        for r in store.query(**filters, limit=args.limit):
            score = f"{r.score:8.3f}" if r.score is not None else "       -"
            print(f"{r.time}  {r.product}  {r.verdict:5} {score}  {r.image_path or ''}"
                  f"{'  ' + r.error if r.error else ''}")
        counts = store.summary(args.product, args.since)
        print(f"{counts['total']} inspected: {counts['OK']} OK, {counts['NG']} NG, {counts['ERROR']} error(s)",
              file=sys.stderr)
        pending, rejected = store.pending_count(), store.rejected_count()
        if pending:
            print(f"{pending} row(s) wait in {', '.join(map(str, store.pending_files())) or 'memory'}",
                  file=sys.stderr)
        if rejected:
            print(f"{rejected} row(s) could not be written and are kept in {store.rejected_path}", file=sys.stderr)
    return EXIT_OK


def cmd_shift(args) -> int:
    from .services import shift_start

    with _open_store(args) as store:
        start = _changes(args, store, "shift").new_shift() if args.new else shift_start(store)
        if start is None:
            print("No shift has started on this station yet: inspector shift --new starts one.")
            return EXIT_OK
        since = datetime.fromisoformat(start).astimezone()
        print(f"{'New shift' if args.new else 'Shift'} since {since:%Y-%m-%d %H:%M:%S}")
        for product in ([args.product] if args.product else store.products()):
            counts = store.summary(product, start)
            if counts["total"]:
                print(f"{product}: {counts['total']} inspected, {counts['OK']} OK, {counts['NG']} NG, "
                      f"{counts['ERROR']} error(s), yield {_percent(yield_rate(counts['OK'], counts['NG']))}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from .evaluation.methods import make_method
    from .evaluation.report import evaluate_method, summary

    settings = _settings(args, Path(args.category_dir) / "train" / "good")
    if args.known_defects is not None:
        from .evaluation import known_defects

        if args.method != DEFAULT_METHOD:
            print("error: --known-defects evaluates the station's method (patchcore) with the defect heads; "
                  "leave out --method.", file=sys.stderr)
            return EXIT_ERROR
        report = known_defects.evaluate_known_defects(args.category_dir, settings, args.known_defects,
                                                      ProgressLine(), None)
        print(known_defects.summary(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        return EXIT_OK
    method = make_method(args.method, settings, args.device, args.vit_weights, args.max_epochs)
    report = evaluate_method(args.category_dir, method, args.plots, ProgressLine(), None)
    print(summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return EXIT_OK


def cmd_compare(args) -> int:
    from .evaluation.compare import compare, default_methods, table

    methods = args.methods or default_methods(args.vit_weights)
    if not args.methods and args.vit_weights is None:
        print("vit-knn left out: it needs a ViT weight file (--vit-weights FILE); none ships", file=sys.stderr)
    settings = _settings(args, Path(args.category_dirs[0]) / "train" / "good")
    reports = compare(args.category_dirs, methods, settings, args.device, args.vit_weights, args.max_epochs,
                      args.plot, ProgressLine(), None, lambda r: print(table([r]).splitlines()[-1], file=sys.stderr))
    print(table(reports))
    if args.plot:
        print(f"ROC curves: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2), encoding="utf-8")
    return EXIT_OK


def cmd_self_test(args) -> int:
    from .selftest import self_test

    return EXIT_OK if self_test(print) else EXIT_ERROR


def cmd_gui(args) -> int:
    from .app import main as gui_main

    plant = ["--plant", args.plant] if getattr(args, "plant", None) else []
    return gui_main(["--models-dir", str(args.models_dir), "--db", str(args.db), *plant])


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, default=None, help="folder of product models")
    common.add_argument("--db", type=Path, default=None, help="SQLite result log (default: beside the models folder)")
    product = argparse.ArgumentParser(add_help=False)
    product.add_argument("--product", required=True, help="product (recipe) name")
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", default="cpu", help="cpu (ONNX Runtime), cuda or mps (torch)")
    plant = argparse.ArgumentParser(add_help=False)
    plant.add_argument("--plant", metavar="URL", default=argparse.SUPPRESS,
                       help="the plant database, postgresql://USER@HOST/DB?sslmode=verify-full (default: "
                            "$INSPECTOR_PLANT); the password from ~/.pgpass or PGPASSWORD")
    line = argparse.ArgumentParser(add_help=False, parents=[device, plant])
    line.add_argument("--archive", type=Path, help="save heatmap overlays under this folder")
    line.add_argument("--follow", action="store_true",
                      help="with a plant database: install the product's newly published model versions")
    lineio = argparse.ArgumentParser(add_help=False)
    g = lineio.add_argument_group("line I/O (off unless given; an address is PORT, on 127.0.0.1, or HOST:PORT)")
    g.add_argument("--opcua", metavar="[HOST:]PORT", help="serve the line over OPC UA (4840 is usual): "
                                                          "a PLC then triggers each part")
    g.add_argument("--modbus", metavar="[HOST:]PORT", help="serve the line over Modbus TCP (502 is usual): "
                                                           "a PLC then triggers each part")
    g.add_argument("--mqtt", metavar="HOST[:PORT]", help="publish every verdict to this MQTT broker (port 1883)")
    g.add_argument("--station", help="the station's name in MQTT topics (default: the computer's name)")
    g.add_argument("--plc-product-select", action="store_true",
                   help="let the PLC select the product (recorded as an event); refused otherwise")
    sort = argparse.ArgumentParser(add_help=False)
    sort.add_argument("--sort", action="store_true", help="move files into OK/ NG/ ERROR/ subfolders "
                                                          "(never over another file)")

    parser = argparse.ArgumentParser(prog="inspector", description="Inspector: visual inspection station.")
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train", parents=[common, product],
                       help="teach a product from a folder of good images, or from a camera's frames of good parts")
    p.add_argument("good_dir", type=Path, nargs="?", help="the folder of good images (optional with --camera)")
    p.add_argument("--camera", metavar="SOURCE", help="first capture frames of good parts from this camera index, "
                                                     "stream URL or video file, kept with the product's taught images")
    p.add_argument("--frames", type=_at_least(1, int), default=30, help="with --camera: how many frames (default 30)")
    p.add_argument("--every", type=_at_least(0.0), default=0.0,
                   help="with --camera: seconds between two captured frames (default 0: each new frame)")
    p.add_argument("--roi", type=Path, help="inspection region: a mask image, white = inspect (any size: it is "
                                            "stretched like the part images)")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-defects", parents=[common, product],
                       help="learn from known defects: a defect classifier and a segmentation head on the model")
    p.add_argument("good_dir", type=Path, nargs="?", help="the good images the product was trained on (default: "
                                                           "the folder its model records)")
    p.add_argument("defects_dir", type=Path, help="known defects, a subfolder per kind; masks: NAME_mask.png beside "
                                                  "each, or ../ground_truth/KIND/NAME_mask.png")
    p.add_argument("--min-defect-area", type=_at_least(0.0), help="accept regions smaller than this (camera pixels, "
                                                                 "or mm2 with --mm-per-px)")
    p.add_argument("--mm-per-px", type=_at_least(0.0), help="the camera's scale, for areas in mm2 (0: none, "
                                                            "areas in camera pixels)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_train_defects)

    p = sub.add_parser("region", aliases=["roi"], parents=[common, product],
                       help="change the inspection region of a trained product (no good image is read)")
    p.add_argument("mask", type=Path, nargs="?", help="mask image: white = inspect, black = ignore")
    p.add_argument("--clear", action="store_true", help="inspect the whole image again")
    p.set_defaults(func=cmd_region)

    p = sub.add_parser("teach", parents=[common, product, device],
                       help="'this part is good': teach good parts the line rejected, without retraining")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--defect", action="store_true", help="older name of: inspector defect")
    p.set_defaults(func=cmd_teach)

    p = sub.add_parser("defect", parents=[common, product],
                       help="'this part is a defect': add parts to the product's known defects (no PIN needed)")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.set_defaults(func=cmd_defect)

    p = sub.add_parser("rollback", parents=[common, product],
                       help="make an earlier model version the product's model again (as a new version)")
    p.add_argument("--version", type=_at_least(1, int), required=True, help="the version to go back to (see: models --product)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("inspect", parents=[common, product, line, sort], help="inspect image files or folders once")
    p.add_argument("paths", nargs="+")
    p.add_argument("--again", action="store_true",
                   help="inspect again with the current model, files already logged too, and log nothing")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("watch", parents=[common, product, line, sort, lineio], help="inspect every new image in a folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--settle", type=_at_least(0.0), default=0.5, help="seconds a new file must stay unchanged")
    p.add_argument("--max-wait", type=_at_least(0.0), default=30.0,
                   help="seconds a file that stays empty or incomplete is waited for before it is an ERROR")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("camera", parents=[common, product, line, lineio], help="inspect frames of a camera or video")
    p.add_argument("source", help="camera index, stream URL or video file")
    p.add_argument("--rate", type=_at_least(0.0), default=0.0, help="frames inspected per second (default: as fast as possible)")
    p.add_argument("--count", type=_at_least(0, int), default=0, help="stop after this many frames")
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("calibrate", parents=[common, product, device],
                       help="show or set the tolerance; score a folder of known defects")
    _tolerance_option(p, None, "a new tolerance, saved as a new model version")
    p.add_argument("--defects", type=Path, help="folder of known defect images (subfolders too): their scores "
                                                "and how many would pass at the threshold; nothing is logged (default: "
                                                "the product's known defects, see: inspector defect)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("rebuild", parents=[common, product, device],
                       help="rebuild the memory bank at another sampling ratio from the good images")
    p.add_argument("good_dir", type=Path, nargs="?",
                   help="the folder of good images (default: the one the model was trained from)")
    p.add_argument("--sampling-ratio", type=_checked("check_sampling_ratio"), required=True)
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("products", help="create, rename or delete a product")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("create", parents=[common])
    a.add_argument("name")
    a = actions.add_parser("rename", parents=[common], help="rename; its history in the log follows")
    a.add_argument("name")
    a.add_argument("new_name")
    a = actions.add_parser("delete", parents=[common], help="delete every version of its model; "
                                                           "its history stays in the log")
    a.add_argument("name")
    a.add_argument("--yes", action="store_true", help="really delete it")
    p.set_defaults(func=cmd_products)

    p = sub.add_parser("models", parents=[common], help="list trained products, or one product's versions")
    p.add_argument("--product", help="list this product's kept model versions and what changed in each")
    p.add_argument("--resign", action="store_true",
                   help="sign a version this station refuses as unsigned (older format, another station, edited), "
                        "after checking it: saved as the next version (engineer PIN; recorded as an event)")
    p.add_argument("--version", type=int, help="with --resign: the version to sign (default: the newest)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("key", help="the signing key, shared by the stations of a plant so that they verify "
                                   "each other's models (engineer PIN; recorded as an event)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("export", parents=[common], help="write this station's key to a new file (0600)")
    a.add_argument("file", type=Path)
    a = actions.add_parser("import", parents=[common], help="make a key file this station's key (the old one kept)")
    a.add_argument("file", type=Path)
    a.add_argument("--resign", action="store_true",
                   help="sign the products' current versions, which the old key signed, with the new key (each as "
                        "its next version, recorded); without it an import that would orphan them is refused")
    p.set_defaults(func=cmd_key)

    p = sub.add_parser("engineer", parents=[common], help="who the engineer is; or set the engineer's name and PIN "
                                                          "(a change needs the current PIN; recorded as an event)")
    p.add_argument("name", nargs="?", help="the engineer's name (the new PIN is asked, or read from --pin-file)")
    p.add_argument("--pin-file", type=Path, metavar="FILE", help="read the new PIN from the first line of FILE")
    p.set_defaults(func=cmd_engineer)

    p = sub.add_parser("history", parents=[common], help="show or export the result log, or the changes")
    p.add_argument("--product")
    p.add_argument("--verdict", choices=["OK", "NG", "ERROR"])
    p.add_argument("--since", help="ISO time or date")
    p.add_argument("--until", help="ISO time or date")
    p.add_argument("--limit", type=_at_least(1, int), default=None)
    p.add_argument("--csv", type=Path, help="write the rows to this CSV file")
    p.add_argument("--events", action="store_true",
                   help="the recorded changes (training, tolerance, memory bank, region, teaching, "
                        "known defects, roll-back, rename, delete) instead")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("shift", parents=[common],
                       help="the current shift's counts (as on the Monitor tab), or start a new shift")
    p.add_argument("--product")
    p.add_argument("--new", action="store_true", help="start a new shift now (its counts start from zero)")
    p.set_defaults(func=cmd_shift)

    p = sub.add_parser("plant", parents=[common, plant],
                       help="the plant database: every station's counts, yield, model versions; ship, publish, install")
    p.add_argument("--hours", type=_at_least(0.0), default=24, help="the counts of the last hours (default 24)")
    p.add_argument("--silent-after", type=_at_least(0.0), default=600, help="a station not heard from for this many seconds "
                                                                   "is silent (default 600)")
    actions = p.add_subparsers(dest="action")
    actions.add_parser("setup", parents=[common, plant], help="create or upgrade the schema (as the database owner)")
    actions.add_parser("ship", parents=[common, plant], help="ship what the log has not shipped yet")
    actions.add_parser("status", parents=[common, plant], help="connected or not, rows behind")
    a = actions.add_parser("models", parents=[common, plant], help="the published model versions")
    a.add_argument("--product")
    for name, what in (("publish", "publish a kept version (an engineer's login)"),
                       ("install", "install a published version as the product's new version")):
        a = actions.add_parser(name, parents=[common, plant], help=what)
        a.add_argument("--product", required=True)
        a.add_argument("--version", type=_at_least(1, int), help="default: the current (publish) or newest published (install)")
    p.set_defaults(func=cmd_plant)

    p = sub.add_parser("evaluate", parents=[common], help="train and evaluate on an MVTec-AD-layout category")
    p.add_argument("category_dir", type=Path)
    p.add_argument("--json", type=Path, help="write the metrics as JSON")
    p.add_argument("--plots", type=Path, help="write ROC curves, score histograms and a gallery here")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="the method to evaluate (default: the station's, patchcore)")
    p.add_argument("--known-defects", type=_at_least(1, int), metavar="N",
                   help="give N test defects of each kind as known (with masks): the bank alone, the defect "
                        "classifier alone and both, side by side on the other test images")
    _add_method_options(p)
    _add_train_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", parents=[common], help="every method on MVTec-AD-layout categories: one table, "
                                                         "one ROC figure")
    p.add_argument("category_dirs", type=Path, nargs="+", metavar="category_dir")
    p.add_argument("--methods", choices=list(METHODS), nargs="+",
                   help="the methods to compare (default: all; vit-knn only with --vit-weights)")
    p.add_argument("--plot", type=Path, help="write the ROC curves of every method here (PNG)")
    p.add_argument("--json", type=Path, help="write every report as JSON")
    _add_method_options(p)
    _add_train_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("self-test", parents=[common], help="headless check of the whole station on generated parts")
    p.set_defaults(func=cmd_self_test)

    p = sub.add_parser("gui", parents=[common, plant], help="open the desktop application (the default)")
    p.set_defaults(func=cmd_gui)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:  # every argument is checked here, before any work (a bad one: exit 2, said why)
        args = parser.parse_args(argv or ["gui"])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    args.models_dir = args.models_dir or paths.default_models_dir()
    args.db = args.db or paths.default_db_path(args.models_dir)
    start_log_file(Path(args.db).parent)
    try:
        return args.func(args)
    except InspectorError as exc:
        print(f"\nerror: {text(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
