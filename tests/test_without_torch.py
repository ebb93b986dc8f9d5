"""The default install (`pip install -e .`) has neither torch nor the ONNX exporter nor, on some
machines, pyspng. Here they are made unimportable in a fresh interpreter with an empty graph
cache: every command of the command line works on the graphs shipped inside the package, and
what needs the `export` extra says so."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np

from inspector.core.features import EXPORT_EXTRA, EXPORT_MODULES
from inspector.synthetic import make_part, write_parts

from test_cli import write_mvtec

BLOCKED = EXPORT_MODULES + ("pyspng",)
SCRIPT = f"""
import json, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # `import name` raises ImportError, as in an install without it
from inspector.cli import main
for args in json.loads(sys.argv[1]):
    print("=== command", flush=True)
    print("=== command", file=sys.stderr, flush=True)
    print("=== exit", main(args), flush=True)
print("=== loaded", sorted(name for name in {BLOCKED!r} if sys.modules.get(name) is not None))
"""


def run_commands(commands: list[list[str]], cache) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each command, all run in one torch-free interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")} | {"INSPECTOR_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.rstrip().endswith("=== loaded []")
    outs = done.stdout.split("=== command\n")[1:]
    errs = done.stderr.split("=== command\n")[1:]
    assert len(outs) == len(errs) == len(commands), done.stdout[-3000:] + done.stderr[-3000:]
    return [(int(out.split("=== exit ")[1].split()[0]), out, err) for out, err in zip(outs, errs)]


def test_every_command_runs_without_torch_and_names_the_extra_where_needed(tmp_path):
    write_parts(tmp_path / "good", 10)
    line = tmp_path / "line"
    write_parts(line, 2, seed=40)
    write_parts(line, 1, "stain", seed=41)
    write_mvtec(tmp_path / "category")
    video = tmp_path / "camera.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20, (256, 256))
    for i in range(3):
        writer.write(cv2.cvtColor(make_part(300 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    mask = np.full((256, 256), 255, np.uint8)
    mask[:32, :32] = 0
    cv2.imwrite(str(tmp_path / "roi.png"), mask)
    common = ["--models-dir", str(tmp_path / "models"), "--db", str(tmp_path / "log.db")]
    product = ["--product", "part"]
    commands = {
        "self-test": ["self-test"],
        "train": ["train", str(tmp_path / "good"), *product, *common],
        "train 320": ["train", str(tmp_path / "good"), "--product", "big", "--image-size", "320", *common],
        "inspect": ["inspect", str(line), *product, *common],
        "inspect again": ["inspect", str(line), *product, "--again", *common],
        "camera": ["camera", str(video), *product, "--count", "2", *common],
        "calibrate": ["calibrate", *product, "--tolerance", "2.5", "--defects", str(line), *common],
        "rebuild": ["rebuild", str(tmp_path / "good"), *product, "--sampling-ratio", "0.05", *common],
        "roi": ["region", str(tmp_path / "roi.png"), *product, *common],
        "teach": ["teach", str(line / "good_040.png"), *product, *common],
        "rollback": ["rollback", *product, "--version", "1", *common],
        "versions": ["models", *product, *common],
        "create": ["products", "create", "spare", *common],
        "rename": ["products", "rename", "spare", "spare 2", *common],
        "delete": ["products", "delete", "spare 2", "--yes", *common],
        "models": ["models", *common],
        "history": ["history", "--csv", str(tmp_path / "log.csv"), *common],
        "events": ["history", "--events", *common],
        "shift": ["shift", *common],
        "evaluate": ["evaluate", str(tmp_path / "category"), "--plots", str(tmp_path / "plots"),
                     "--models-dir", str(tmp_path / "eval-models")],
        "compare": ["compare", str(tmp_path / "category"), "--methods", "patchcore", "knn",
                    "--plot", str(tmp_path / "compare.png"), "--models-dir", str(tmp_path / "eval-models")],
        "network method": ["evaluate", str(tmp_path / "category"), "--method", "ae",
                           "--models-dir", str(tmp_path / "eval-models")],
        "other backbone": ["train", str(tmp_path / "good"), "--product", "rn", "--backbone", "resnet18", *common],
        "other size": ["train", str(tmp_path / "good"), "--product", "odd", "--image-size", "288", *common],
        "gpu": ["train", str(tmp_path / "good"), "--product", "gpu", "--device", "cuda", *common],
    }
    results = dict(zip(commands, run_commands(list(commands.values()), tmp_path / "cache")))

    assert results["self-test"][0] == 0 and "self-test passed" in results["self-test"][1]
    for name in ("train", "train 320", "other size", "calibrate", "rebuild", "roi", "teach", "rollback", "versions", "create",
                 "rename", "delete", "models", "history", "events", "shift"):
        assert results[name][0] == 0, results[name]
    for name in ("inspect", "inspect again"):
        assert results[name][0] == 1 and results[name][1].count("NG ") == 1, results[name]  # the stain
    assert results["camera"][0] in (0, 1) and results["camera"][1].count("camera.avi#") == 2
    assert "part (number 2): version 6" in results["models"][1] and "spare" not in results["models"][1]
    assert (tmp_path / "log.csv").is_file()
    assert results["evaluate"][0] == 0 and (tmp_path / "plots" / "roc.png").is_file()
    assert "now --defect-size" in results["other size"][2]  # any scale runs on the shipped graph
    for name, needs in (("other backbone", "Backbone 'resnet18'"), ("gpu", "Device 'cuda'")):
        code, _, err = results[name]
        assert code == 2 and needs in err and f"pip install '{EXPORT_EXTRA}'" in err and "torch" in err, err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.onnx"))
    assert results["compare"][0] == 0 and "knn" in results["compare"][1] and (tmp_path / "compare.png").is_file()
    code, _, err = results["network method"]  # a method that trains a network needs torch
    assert code == 2 and "The 'ae' method" in err and f"pip install '{EXPORT_EXTRA}'" in err, err
