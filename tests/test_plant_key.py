"""One signing key for the stations of a plant: exported from one station, imported on another,
so that each verifies the other's models; the import re-signs knowingly or changes nothing."""
import os
import shutil

import pytest

from inspector.cli import EXIT_ERROR, EXIT_OK, main
from inspector.core.model_store import load_model
from inspector.errors import ModelError
from inspector.signing import key_path
from inspector.store.results import ResultStore
from inspector.users import Accounts, accounts_path

PIN = "2468"


def station(root, trained_models):
    """A station folder with its own key and a copy of the trained product, signed with it."""
    models = root / "models"
    shutil.copytree(trained_models, models)
    main(["models", "--resign", "--product", "Disc", "--models-dir", str(models), "--db", str(root / "log.db")])
    Accounts(accounts_path(root)).set_engineer("Eve", PIN)
    return ["--models-dir", str(models), "--db", str(root / "log.db")]


def test_export_then_import_shares_the_key_and_resigns_knowingly(trained_models, tmp_path, capsys, monkeypatch):
    a, b = station(tmp_path / "a", trained_models), station(tmp_path / "b", trained_models)
    file = tmp_path / "plant.key"
    monkeypatch.delenv("INSPECTOR_PIN", raising=False)
    assert main(["key", "export", str(file)] + a) == EXIT_ERROR  # the engineer's PIN first
    assert not file.exists()
    monkeypatch.setenv("INSPECTOR_PIN", PIN)
    assert main(["key", "export", str(file)] + a) == EXIT_OK
    assert os.stat(file).st_mode & 0o777 == 0o600 and file.read_text().strip() == key_path(tmp_path / "a" / "models").read_text().strip()
    assert main(["key", "export", str(file)] + a) == EXIT_ERROR  # never over a file
    capsys.readouterr()

    # B's product is signed with B's key: importing A's would orphan it, so it is refused, said why
    assert main(["key", "import", str(file)] + b) == EXIT_ERROR
    assert "--resign" in capsys.readouterr().err
    load_model(tmp_path / "b" / "models", "Disc")  # unchanged
    with pytest.raises(ModelError, match="not signed by this station"):  # A's model on B: refused
        load_model(shutil.copytree(tmp_path / "a" / "models", tmp_path / "b" / "from_a"), "Disc")

    assert main(["key", "import", str(file), "--resign"] + b) == EXIT_OK
    out = capsys.readouterr().out
    assert "Signed 'Disc'" in out
    b_models = tmp_path / "b" / "models"
    assert load_model(b_models, "Disc").version == 3  # re-signed as its next version
    assert load_model(tmp_path / "b" / "from_a", "Disc")  # A's models now verify on B
    assert list((tmp_path / "b").glob("station.key.*.old"))  # the old key is kept
    with ResultStore(tmp_path / "b" / "log.db") as store:
        kinds = [e.kind for e in store.events()]
        key_event = next(e for e in store.events() if e.kind == "key")
    assert "key" in kinds and kinds.count("resign") == 2 and key_event.user == "Eve (engineer)"
    assert PIN not in key_event.detail and file.read_text().strip() not in (key_event.detail + key_event.new)
    assert main(["key", "import", str(file)] + b) == EXIT_OK  # the same key again: nothing to do


def test_a_file_that_is_not_a_key_is_refused(trained_models, tmp_path, capsys, monkeypatch):
    common = station(tmp_path / "a", trained_models)
    monkeypatch.setenv("INSPECTOR_PIN", PIN)
    (tmp_path / "junk.key").write_text("not a key")
    assert main(["key", "import", str(tmp_path / "junk.key")] + common) == EXIT_ERROR
    assert "is not a key file" in capsys.readouterr().err
    assert main(["key", "import", str(tmp_path / "missing.key")] + common) == EXIT_ERROR
    load_model(tmp_path / "a" / "models", "Disc")
