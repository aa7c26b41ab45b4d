"""Style is a test (STYLE.md habit 15): tools/tidy.py must report nothing."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_tidy():
    spec = importlib.util.spec_from_file_location("tidy", ROOT / "tools" / "tidy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tidy_is_clean():
    findings = _load_tidy().run()
    assert findings == [], "\n".join(findings)


def test_tidy_catches_a_banned_import_in_the_raft_core(tmp_path):
    tidy = _load_tidy()
    out = []
    path = tidy.ROOT / "raftkv" / "raft" / "fake.py"
    src = "import time\ntry:\n    pass\nexcept:\n    pass\n"
    tidy._check_python(path.relative_to(tidy.ROOT), src, out)
    assert any("must not import time" in f for f in out), out
    assert any("bare except" in f for f in out), out


def test_tidy_catches_a_wrong_import_direction():
    tidy = _load_tidy()
    out = []
    path = tidy.ROOT / "raftkv" / "storage" / "fake.py"
    tidy._check_python(path.relative_to(tidy.ROOT), "from raftkv.server import raft_loop\n", out)
    assert any("raftkv.storage must not import raftkv.server" in f for f in out), out
