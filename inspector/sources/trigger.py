"""Triggers: the line inspects one part per trigger (a PLC's, or the operator's Snap).

A trigger announces a part; the line takes it (snaps the camera, or takes the next file), inspects and logs it, and
says it is done. One part is under way at a time: a trigger that comes while one is (from its acceptance until its
result is out) is counted as missed and refused, never silently dropped. Thread-safe: servers fire from their own
threads, the line takes from its own."""
from __future__ import annotations

import threading


class Trigger:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: int | None = None  # the part announced and not yet taken
        self._busy = False  # a part is announced or under way
        self.count = 0  # triggers accepted
        self.missed = 0  # triggers refused because a part was under way

    def fire(self, part_id: int | None = None, refuse: bool = False) -> int | None:
        """Announce a part (`part_id`, else the number of this trigger). Returns the part's
        number, or None when a part is under way (or `refuse`: the caller cannot take a
        result now): the trigger is then counted as missed."""
        with self._cond:
            if self._busy or refuse:
                self.missed += 1
                return None
            self.count += 1
            self._busy = True
            self._waiting = part_id or self.count
            self._cond.notify_all()
            return self._waiting

    def set(self) -> None:
        """The operator's Snap: a trigger without a part number."""
        self.fire()

    def take(self, timeout: float) -> int | None:
        """The number of the part announced, waiting up to `timeout` seconds; None if none."""
        with self._cond:
            self._cond.wait_for(lambda: self._waiting is not None, timeout)
            part, self._waiting = self._waiting, None
            return part

    def done(self) -> None:
        """The part taken has its result: the next trigger is accepted."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        return self._busy
