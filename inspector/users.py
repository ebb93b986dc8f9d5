"""Who may change what at the station.

An *operator* runs the line and reviews results. An *engineer* also trains, changes the tolerance or the memory
bank, renames and deletes products. The engineer's PIN (or password) is set on the station's first start and kept
only as a salted scrypt hash in `accounts.json` beside the result log; nothing else is stored. Wrong PINs are
counted: after `MAX_TRIES` in a row, unlocking is refused for `LOCKOUT_S` seconds.

Qt-free: the desktop application asks, this module decides."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import InspectorError
from .files import read_regular

OPERATOR, ENGINEER, LINE = "operator", "engineer", "line"  # LINE: a PLC, not a person
ACCOUNTS_FILE = "accounts.json"
FORMAT = "inspector-accounts"
MIN_PIN = 4
MAX_TRIES = 5
LOCKOUT_S = 60.0
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}  # about 50 ms per check: slow for guessing, quick to unlock


class AccessDenied(InspectorError):
    """A wrong PIN, a PIN too short, or an action the current user may not take."""


@dataclass(frozen=True)
class User:
    name: str
    level: str  # OPERATOR or ENGINEER

    @property
    def is_engineer(self) -> bool:
        return self.level == ENGINEER

    def __str__(self) -> str:
        """As events record who changed something: 'Anna (engineer)', 'operator', 'PLC over Modbus'."""
        return self.name if self.level in (self.name, LINE) else f"{self.name} ({self.level})"


OPERATOR_USER = User("operator", OPERATOR)


def accounts_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / ACCOUNTS_FILE


def _hash(pin: str, salt: bytes, params: dict) -> str:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, maxmem=64 * 1024 * 1024, dklen=32, **params).hex()


class Accounts:
    """The engineer account of one station (one file)."""

    def __init__(self, path: str | Path, clock=time.monotonic):
        self.path = Path(path)
        self._clock = clock
        self._failures = 0
        self._locked_until = 0.0

    def _read(self) -> dict | None:
        try:
            data = json.loads(read_regular(self.path, 1 << 20).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AccessDenied(f"The accounts file {self.path} cannot be read ({exc}). Restore it from a "
                               f"backup, or delete it to set a new engineer PIN.") from exc
        engineer = data.get("engineer") if isinstance(data, dict) and data.get("format") == FORMAT else None
        if not isinstance(engineer, dict) or not {"name", "salt", "hash", "scrypt"} <= engineer.keys():
            raise AccessDenied(f"{self.path} is not an Inspector accounts file. Restore it from a backup, "
                               f"or delete it to set a new engineer PIN.")
        return engineer

    def is_set_up(self) -> bool:
        """Whether an engineer PIN has been set (False on the station's first start)."""
        return self._read() is not None

    def engineer_name(self) -> str | None:
        engineer = self._read()
        return engineer["name"] if engineer else None

    def set_engineer(self, name: str, pin: str, old_pin: str | None = None) -> User:
        """Set the engineer's name and PIN: on the first start freely, later only with the current PIN."""
        name = name.strip()
        if not name:
            raise AccessDenied("Give the engineer's name.")
        if len(pin) < MIN_PIN:
            raise AccessDenied(f"The PIN must have at least {MIN_PIN} characters.")
        if self.is_set_up():
            self.unlock(old_pin or "")
        salt = secrets.token_bytes(16)
        data = {"format": FORMAT, "version": 1,
                "engineer": {"name": name, "salt": salt.hex(), "scrypt": _SCRYPT,
                             "hash": _hash(pin, salt, _SCRYPT)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return User(name, ENGINEER)

    def unlock(self, pin: str) -> User:
        """The engineer, if `pin` is right; AccessDenied otherwise."""
        now = self._clock()
        if now < self._locked_until:
            raise AccessDenied(f"Too many wrong PINs: try again in {self._locked_until - now:.0f} s.")
        engineer = self._read()
        if engineer is None:
            raise AccessDenied("No engineer PIN is set on this station yet: set one first.")
        expected = engineer["hash"]
        given = _hash(pin, bytes.fromhex(engineer["salt"]), engineer["scrypt"])
        if not hmac.compare_digest(given, expected):
            self._failures += 1
            if self._failures >= MAX_TRIES:
                self._failures = 0
                self._locked_until = now + LOCKOUT_S
                raise AccessDenied(f"Wrong PIN, {MAX_TRIES} times: unlocking is refused for {LOCKOUT_S:.0f} s.")
            raise AccessDenied("Wrong PIN.")
        self._failures = 0
        return User(engineer["name"], ENGINEER)


def require_engineer(user: User, what: str) -> None:
    """Refuse `what` (e.g. 'change the tolerance') to anyone but an engineer."""
    if not user.is_engineer:
        raise AccessDenied(f"Only an engineer may {what}: unlock with the engineer PIN first.")
