"""Auto-compaction's decisions (raftkv/server/autocompact.py) on a fake clock, and its flags."""
import pytest

from raftkv.server import autocompact
from raftkv.server.autocompact import Compactor
from raftkv.server.config import ConfigError, load_config, parse_retention


@pytest.mark.parametrize("mode,text,want", [
    ("periodic", "0", 0), ("periodic", "1", 3600), ("periodic", "0.5", 1800),
    ("periodic", "30m", 1800), ("periodic", "1h30m", 5400), ("periodic", "90s", 90),
    ("revision", "1000", 1000), ("revision", "0", 0),
])
def test_retentions_as_etcd_reads_them(mode, text, want):
    assert parse_retention(mode, text) == want


@pytest.mark.parametrize("args,words", [
    (["--auto-compaction-mode", "daily"], "periodic or revision"),
    (["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
     "number of revisions"),
    (["--auto-compaction-retention", "an hour"], "duration"),
    (["--auto-compaction-retention", "-1"], "negative"),
])
def test_bad_flags_name_the_flag(args, words):
    with pytest.raises(ConfigError, match=words):
        load_config(["--name", "m1", *args], environ={})


def test_flags_default_to_off():
    cfg = load_config(["--name", "m1"], environ={})
    assert (cfg.auto_compaction_mode, cfg.auto_compaction) == ("periodic", 0)
    cfg = load_config(["--name", "m1", "--auto-compaction-retention", "2h"], environ={})
    assert cfg.auto_compaction == 7200


def test_revision_mode_keeps_the_last_retention_revisions_every_five_minutes():
    c = Compactor("revision", 1000)
    assert c.tick(0.0, 5000, 0) == 0  # starts the clock
    assert c.tick(299.0, 5000, 0) == 0
    assert c.tick(300.0, 5000, 0) == 4000
    assert c.tick(400.0, 9000, 4000) == 0  # not before the next five minutes
    assert c.tick(600.0, 4500, 4000) == 0  # nothing new to compact
    assert c.tick(900.0, 9000, 4000) == 8000


def test_periodic_mode_keeps_what_was_written_within_the_retention():
    c = Compactor("periodic", 100.0)  # samples every 10 s, compacts every 100 s
    rev = {t: 10 + t for t in range(0, 1000, 10)}  # one revision a second
    got = [(t, c.tick(float(t), rev[t], 0)) for t in range(0, 300, 10)]
    compactions = [(t, r) for t, r in got if r]
    assert compactions[0] == (100, rev[0])  # at 100 s: what was the revision 100 s ago
    assert compactions[1] == (200, rev[100])
    c2 = Compactor("periodic", 7200.0)  # a retention above an hour compacts hourly
    assert (c2.compact_every_s, c2.sample_every_s) == (3600.0, 360.0)


def test_a_new_leader_starts_over():
    c = Compactor("periodic", 10.0)
    for t in range(0, 30):
        c.tick(float(t), 100 + t, 0)
    c.reset(now=30.0)
    assert all(c.tick(30.0 + t, 200 + t, 0) == 0 for t in range(10))  # no old samples
    assert autocompact.REVISION_INTERVAL_S == 300.0
