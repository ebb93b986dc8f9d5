"""The station's signing key: 32 random bytes in `station.key` (hex, permissions 0600) in
the station's data folder, the folder that holds the models folder, beside the result log
and accounts.json. It is created on first use. Whoever holds it can sign models (see
core.model); whoever can only write the models folder cannot. Deleting it makes every
model unsigned: an engineer then re-signs them (inspector models --resign)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ModelError
from .files import read_regular

KEY_FILE = "station.key"


def key_path(models_dir: str | Path) -> Path:
    return Path(os.path.abspath(models_dir)).parent / KEY_FILE


def station_key(models_dir: str | Path) -> bytes:
    """The key of the station whose models are in `models_dir`, created when there is none."""
    path = key_path(models_dir)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # only if there is none yet: two first uses agree on one key
        except FileExistsError:
            pass
    except OSError as exc:
        raise ModelError(f"Cannot create the station's signing key {path} ({exc}): models cannot be "
                         f"signed or checked. Make the data folder writable.") from exc
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return _read(path)


def _read(path: Path) -> bytes:
    try:
        text = read_regular(path, 4096).decode("ascii").strip()
        key = bytes.fromhex(text)
        if len(key) != 32:
            raise ValueError(f"{len(key)} bytes instead of 32")
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelError(f"The station's signing key {path} is damaged ({exc}): restore it from a backup, or "
                         f"delete it and re-sign every model (inspector models --resign).") from exc
    return key
