"""Each product's number (1, 2, 3 ...), by which a PLC selects it (Modbus PRODUCT_SELECT) and `inspector models` shows
it. A number is given once, on a product's first use (its creation, or the first time the numbers are read: older
products in name order), kept in NUMBERS_FILE in the models folder (data-only JSON) and never changed: adding,
removing or renaming a product leaves every other product's number as it was, and a removed product's number is not
given to another one (the same name, created again, gets it back)."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import ModelError
from ..files import file_lock, read_regular
from .model import check_product_name

NUMBERS_FILE = "product_numbers.json"
FORMAT = "inspector-product-numbers"
MAX_NUMBER = 0xFFFF  # one Modbus register
_MAX_BYTES = 1 << 20


def product_numbers(models_dir: str | Path) -> dict[str, int]:
    """The number of every product in the models folder, in number order (a product without one is given one)."""
    root = Path(models_dir)
    products = _products(root)
    if not products:
        return {}
    with _locked(root) as numbers:
        for product in sorted(products):  # older products in name order
            if product not in numbers:
                numbers[product] = _next(numbers, root)
    return {p: n for p, n in sorted(numbers.items(), key=lambda item: item[1]) if p in products}


def rename_number(models_dir: str | Path, product: str, new_name: str) -> None:
    """A renamed product keeps its number."""
    root = Path(models_dir)
    with _locked(root) as numbers:
        number = numbers.pop(product, None) or _next(numbers, root)
        numbers[new_name] = number


def _products(root: Path) -> set[str]:
    if not root.is_dir():
        return set()
    out = set()
    for folder in root.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            try:
                out.add(check_product_name(folder.name))
            except ModelError:
                continue  # not a product's folder
    return out


def _next(numbers: dict[str, int], root: Path) -> int:
    number = max(numbers.values(), default=0) + 1
    if number > MAX_NUMBER:
        raise ModelError(f"No product number is left in {root / NUMBERS_FILE} (at most {MAX_NUMBER}).")
    return number


@contextmanager
def _locked(root: Path):
    """The numbers, read under the folder's lock, and written back (durably) if changed."""
    path = root / NUMBERS_FILE
    with file_lock(root / f".{NUMBERS_FILE}.lock"):
        numbers = _read(path)
        was = dict(numbers)
        yield numbers
        if numbers != was:
            _write(path, numbers)


def _read(path: Path) -> dict[str, int]:
    try:
        data = json.loads(read_regular(path, _MAX_BYTES))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"The product numbers in {path} cannot be read ({exc}): restore the file from a "
                         f"backup, or delete it to number the products again in name order.") from exc
    numbers = data.get("products") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(numbers, dict) or not all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_NUMBER for n in numbers.values()) \
            or len(set(numbers.values())) != len(numbers):
        raise ModelError(f"{path} is not a list of product numbers (each product a different number from 1 to "
                         f"{MAX_NUMBER}): restore the file from a backup, or delete it to number the products "
                         f"again in name order.")
    return dict(numbers)


def _write(path: Path, numbers: dict[str, int]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = {"format": FORMAT, "products": dict(sorted(numbers.items(), key=lambda item: item[1]))}
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"Cannot record the product numbers in {path}: {exc}") from exc
