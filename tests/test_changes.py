"""The one owner of every change (inspector.changes): who may make each kind, and each kind
present in the shells its table names."""
import argparse
import threading

import pytest
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QAbstractButton

from inspector import services
from inspector.changes import KINDS, Changes, LineRunning
from inspector.cli import EXIT_ERROR, EXIT_OK, build_parser, main
from inspector.core.model import Settings
from inspector.core.model_store import current_version
from inspector.store.results import ResultStore
from inspector.synthetic import write_parts
from inspector.users import ENGINEER, OPERATOR_USER, AccessDenied, Accounts, User, accounts_path

from conftest import PRODUCT, copy_models


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_has_its_command_on_the_command_line(kind):
    parser = build_parser()
    for word in KINDS[kind].command.split():
        if word.startswith("--"):
            assert word in parser._option_string_actions, f"{kind}: {KINDS[kind].command}"
        else:
            parser = _subparser(parser, word)
            assert parser is not None, f"{kind}: no command {KINDS[kind].command}"


def test_every_kind_with_a_label_has_its_control_in_the_window(open_window, tmp_path):
    window = open_window(tmp_path / "models", engineer=False)
    texts = [w.text() for w in window.findChildren(QAbstractButton)] + [a.text() for a in window.findChildren(QAction)]
    missing = [kind for kind, k in KINDS.items()
               if k.label is not None and not any(t.startswith(k.label) for t in texts)]  # '… (engineer only)'
    assert not missing


def test_who_may_make_each_kind(tmp_path):
    store = ResultStore(tmp_path / "log.db")
    open_station = Changes(tmp_path / "models", store)  # no engineer PIN yet: nobody signed in may
    for kind in KINDS:
        open_station.check(kind)
    Accounts(accounts_path(tmp_path)).set_engineer("Eve", "2468")
    engineer, operator, nobody = (Changes(tmp_path / "models", store, user)
                                  for user in (User("Eve", ENGINEER), OPERATOR_USER, None))
    for kind, k in KINDS.items():
        engineer.check(kind)
        for refused in (operator, nobody):
            if k.permission is None:
                refused.check(kind)
            else:
                with pytest.raises(AccessDenied, match=f"Only an engineer may {k.permission}"):
                    refused.check(kind)
    store.close()


def test_a_refused_change_does_nothing_whichever_caller(tmp_path):
    store = ResultStore(tmp_path / "log.db")
    Accounts(accounts_path(tmp_path)).set_engineer("Eve", "2468")
    good = write_parts(tmp_path / "good", 6)
    for user in (OPERATOR_USER, None):
        with pytest.raises(AccessDenied, match="train a product"):
            Changes(tmp_path / "models", store, user).train("Disc", good, Settings())
        with pytest.raises(AccessDenied, match="create a product"):
            Changes(tmp_path / "models", store, user).create_product("Gear")
    assert current_version(tmp_path / "models", "Disc") is None and not (tmp_path / "models" / "Gear").exists()
    assert store.events() == []
    shift = Changes(tmp_path / "models", store, OPERATOR_USER).new_shift()  # anyone may start a shift
    [event] = store.events()
    assert (event.kind, event.new, event.user) == ("shift", shift, "operator")
    store.close()


def test_no_model_to_check_is_made_while_a_line_runs_in_any_shell(trained_models, tmp_path, capsys):
    """A line follows new model versions: a training, a rebuild of the bank or a training of the
    defect heads is refused while one runs at the station, to whichever shell asks; other changes
    (the tolerance) are not; after the line stops, the rebuild is made."""
    models = copy_models(trained_models, tmp_path / "models")
    store, stop, live = ResultStore(tmp_path / "log.db"), threading.Event(), threading.Event()
    (tmp_path / "line").mkdir()
    line = threading.Thread(target=services.run_line, args=(models, store, PRODUCT, "folder", tmp_path / "line", stop,
                                                            lambda outcome: None),
                            kwargs={"on_status": lambda state, reason: state == "live" and live.set()})
    line.start()
    try:
        assert live.wait(60)
        changes, before = Changes(models, store), current_version(models, PRODUCT)
        for kind, k in KINDS.items():
            if k.idle:
                with pytest.raises(LineRunning, match=f"stop it before you {k.permission}"):
                    changes.check(kind)
        with pytest.raises(LineRunning):
            changes.rebuild_bank(PRODUCT, 0.5)
        args = ["--models-dir", str(models), "--db", str(tmp_path / "log.db"), "--product", PRODUCT]
        assert main(["rebuild", "--sampling-ratio", "0.5"] + args) == EXIT_ERROR
        assert "A line is running at this station" in capsys.readouterr().err
        assert current_version(models, PRODUCT) == before and store.events() == []
        assert changes.set_tolerance(PRODUCT, 4.0).version == before + 1  # the line takes it from its next part
    finally:
        stop.set()
        line.join(60)
    assert not line.is_alive()
    good = write_parts(tmp_path / "good", 6)
    assert main(["rebuild", str(good[0].parent), "--sampling-ratio", "0.5"] + args) == EXIT_OK
    assert current_version(models, PRODUCT) == before + 2
    store.close()
