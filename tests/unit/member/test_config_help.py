"""`raftkv --help` (raftkv/server/config.py FLAG_HELP): every flag says what it does, and keeps
its default and environment variable in the text."""
import dataclasses
import re
import subprocess
import sys

import pytest

from raftkv.server import config
from raftkv.server.config import FLAG_HELP, ServerConfig

FIELDS = [f.name for f in dataclasses.fields(ServerConfig)]
HELP_CHARS_MIN = 25  # a sentence, not a word
HELP_CHARS_MAX = 200  # one or two lines of --help


@pytest.mark.parametrize("name", FIELDS)
def test_every_flag_has_a_real_help_text(name):
    text = FLAG_HELP.get(name)
    assert text, f"--{name.replace('_', '-')} has no help text in config.FLAG_HELP"
    assert HELP_CHARS_MIN <= len(text) <= HELP_CHARS_MAX, text
    assert text[0].isupper() or text[0] in "'", text  # a sentence (or a quoted value) first
    # _parser() adds the default and the variable: the text itself must not repeat them.
    assert "default:" not in text and "RAFTKV_" not in text, text


def test_no_help_for_a_flag_that_does_not_exist():
    assert set(FLAG_HELP) <= set(FIELDS)


def _options_text():
    """--help's flag descriptions (after the usage lines), each on one line (argparse wraps
    them)."""
    out = config._parser().format_help().split("show this help message and exit", 1)[1]
    return re.sub(r"\s+", " ", out)


@pytest.mark.parametrize("name", FIELDS)
def test_help_output_has_text_default_and_variable(name):
    out = _options_text()
    flag = "--" + name.replace("_", "-")
    default = repr(getattr(ServerConfig, name))
    # argparse may break a line after a hyphen ("--initial- cluster"): undo that first.
    out = out.replace("- ", "-")
    words = " ".join(FLAG_HELP[name].split()).replace("- ", "-")
    want = f"{words} (default: {default}; env RAFTKV_{name.upper()})"
    start = re.search(re.escape(flag) + r" \[?" + name.upper(), out).start()
    assert want in out[start:start + len(want) + 200], (flag, out[start:start + 400])


def test_raftkv_help_runs():
    proc = subprocess.run([sys.executable, "-m", "raftkv.server", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Milliseconds between the leader's heartbeats" in proc.stdout
    assert "env RAFTKV_CONFIG_FILE" in proc.stdout


def test_raftkv_version_prints_what_etcd_version_does():
    """`raftkv --version`, as `etcd --version`: the versions on stdout, exit 0, no member
    started (whatever other flags came with it)."""
    import platform

    import raftkv
    proc = subprocess.run([sys.executable, "-m", "raftkv", "--version", "--name", "x"],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines() == [
        f"raftkv Version: {raftkv.__version__}", "etcd API Version: 3.4.23",
        f"Python Version: {platform.python_version()}",
        f"Python OS/Arch: linux/{platform.machine()}"]
