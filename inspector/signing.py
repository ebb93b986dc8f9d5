"""The station's signing key: 32 random bytes in `station.key` (hex, permissions 0600) in the station's data folder,
the folder that holds the models folder, beside the result log and accounts.json. It is created on first use.
Whoever holds it can sign models (see core.model_store); whoever can only write the models folder cannot. Deleting
it makes every model unsigned: an engineer then re-signs them (inspector models --resign).

Stations that share models (the plant database, a copied models folder) verify each other's signatures when they
hold one key, the plant's: `export_key` writes this station's key to a file, `import_key` makes a key file this
station's key (services.import_key re-signs what the old key had signed)."""
from __future__ import annotations

import hashlib
import os
import secrets
from contextlib import suppress
from pathlib import Path

from .errors import ModelError
from .files import read_regular

KEY_FILE = "station.key"


def key_path(models_dir: str | Path) -> Path:
    return Path(os.path.abspath(models_dir)).parent / KEY_FILE


def station_key(models_dir: str | Path) -> bytes:
    """The key of the station whose models are in `models_dir`, created when there is none."""
    path = key_path(models_dir)
    with suppress(FileNotFoundError):
        return _read(path)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_new(tmp, secrets.token_bytes(32))
        with suppress(FileExistsError):
            os.link(tmp, path)  # only if there is none yet: two first uses agree on one key
    except OSError as exc:
        raise ModelError(f"Cannot create the station's signing key {path} ({exc}): models cannot be "
                         f"signed or checked. Make the data folder writable.") from exc
    finally:
        with suppress(OSError):
            os.unlink(tmp)
    return _read(path)


def fingerprint(key: bytes) -> str:
    """A key as events and messages name it (never the key itself)."""
    return hashlib.sha256(b"inspector key\0" + key).hexdigest()[:12]


def _write_new(path: Path, key: bytes) -> None:
    """Write a key file that does not exist yet (never over another file), permissions 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())


def export_key(models_dir: str | Path, file: str | Path) -> str:
    """Write the station's key to `file` (a new file, 0600: whoever holds it can sign models
    for every station that imports it). Returns its fingerprint."""
    key = station_key(models_dir)
    try:
        _write_new(Path(file), key)
    except FileExistsError:
        raise ModelError(f"{file} exists already: the key is never written over a file. Choose another name.") from None
    except OSError as exc:
        raise ModelError(f"Cannot write the key to {file}: {exc}") from exc
    return fingerprint(key)


def read_key_file(file: str | Path) -> bytes:
    """A key file written by export_key, checked."""
    try:
        return _read(Path(file))
    except FileNotFoundError:
        raise ModelError(f"No key file {file}: give the file 'inspector key export' wrote.") from None
    except ModelError as exc:
        raise ModelError(f"{file} is not a key file written by 'inspector key export' ({exc.__cause__}).") from None


def import_key(models_dir: str | Path, key: bytes) -> bytes:
    """Make `key` the station's key; the old one is kept beside it as station.key.<its
    fingerprint>.old (to go back: import that file). Returns the old key."""
    path = key_path(models_dir)
    old = station_key(models_dir)
    if old == key:
        return old
    backup = path.with_name(f"{KEY_FILE}.{fingerprint(old)}.old")
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        if not backup.exists():
            _write_new(backup, old)
        _write_new(tmp, key)
        os.replace(tmp, path)
    except OSError as exc:
        raise ModelError(f"Cannot replace the station's signing key {path} ({exc}); it is unchanged.") from exc
    finally:
        with suppress(OSError):
            os.unlink(tmp)
    return old


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
