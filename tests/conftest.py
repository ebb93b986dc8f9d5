"""Shared test setup: the Qt tests run without a display; permission tests run as root too."""
import os
import shutil
import tempfile
import traceback
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

NOBODY = 65534


@pytest.fixture
def open_tmp():
    """A temporary folder that every user may enter and write (tmp_path is private to its
    owner, so an unprivileged child could not reach it)."""
    folder = Path(tempfile.mkdtemp(prefix="inspector-test-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_unprivileged(check, *args) -> None:
    """Run `check(*args)` where file permissions apply: in this process for a normal user;
    as root (which ignores permissions, and is what CI runs as) in a forked child that
    drops to the user 'nobody'. A failure in the child fails the test with its traceback.
    The child only uses what is already imported and files under an `open_tmp` folder."""
    if os.name == "nt":
        pytest.skip("POSIX permissions")
    if os.geteuid() != 0:
        check(*args)
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        status, report = 0, b""
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            check(*args)
        except BaseException:  # noqa: BLE001 - everything goes back to the parent
            status, report = 1, traceback.format_exc().encode()
        os.write(write, report)
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        pytest.fail(f"as user nobody:\n{report}", pytrace=False)
