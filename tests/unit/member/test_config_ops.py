"""etcd 3.4's storage, logging, Raft, experimental, v2, discovery and proxy flags in raftkv's
config (raftkv/server/config.py _finish_ops): each is parsed from a flag, a RAFTKV_* variable
and a YAML key; implemented ones are derived, accepted ones leave a start-up note, refused ones
raise ConfigError saying why. Also: etcd 3.4's sample config file loads."""
import logging

import pytest

from raftkv.server.config import ConfigError, load_config

# etcd 3.4's etcd.conf.yml.sample, comments dropped; enable-v2 is filled in by each test (the
# sample's true is accepted with a warning).
ETCD_34_SAMPLE = """\
name: 'default'
data-dir:
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
quota-backend-bytes: 0
listen-peer-urls: http://localhost:2380
listen-client-urls: http://localhost:2379
max-snapshots: 5
max-wals: 5
cors:
initial-advertise-peer-urls: http://localhost:2380
advertise-client-urls: http://localhost:2379
discovery:
discovery-fallback: 'proxy'
discovery-proxy:
discovery-srv:
initial-cluster:
initial-cluster-token: 'etcd-cluster'
initial-cluster-state: 'new'
strict-reconfig-check: false
enable-v2: {enable_v2}
enable-pprof: true
proxy: 'off'
proxy-failure-wait: 5000
proxy-refresh-interval: 30000
proxy-dial-timeout: 1000
proxy-write-timeout: 5000
proxy-read-timeout: 0
debug: false
logger: zap
log-outputs: [stderr]
force-new-cluster: false
auto-compaction-mode: periodic
auto-compaction-retention: "1"
client-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
peer-transport-security:
  cert-file:
  key-file:
  client-cert-auth: false
  trusted-ca-file:
  auto-tls: false
"""


def _load(argv=(), env=None, yaml_text=None, tmp_path=None):
    argv = list(argv)
    if yaml_text is not None:
        path = tmp_path / "etcd.conf.yml"
        path.write_text(yaml_text)
        argv = ["--config-file", str(path), *argv]
    return load_config(argv, environ=env or {})


def _notes(cfg):
    return " | ".join(text for _, text in cfg.notes)


def test_etcd_sample_config_loads(tmp_path):
    cfg = _load(yaml_text=ETCD_34_SAMPLE.format(enable_v2="false"), tmp_path=tmp_path)
    assert cfg.name == "default" and cfg.data_dir == "./default.raftkv" and cfg.wal_dir == ""
    assert cfg.snapshot_count == 10000 and cfg.heartbeat_interval == 100
    assert cfg.election_timeout == 1000 and cfg.quota_backend_bytes == 0
    assert cfg.listen_client_urls == "http://localhost:2379"
    assert cfg.initial_cluster == "default=http://localhost:2380"
    assert cfg.initial_cluster_token == "etcd-cluster" and cfg.initial_cluster_state == "new"
    assert cfg.strict_reconfig_check is False and cfg.enable_pprof is True
    assert cfg.max_wals == 5 and cfg.max_snapshots == 5 and cfg.cors == "*"
    assert cfg.discovery == "" and cfg.discovery_fallback == "proxy" and cfg.proxy == "off"
    assert cfg.logger == "zap" and cfg.log_format == "json"  # zap: JSON lines, as etcd's
    assert cfg.log_targets == ("stderr",) and cfg.log_level == "info"
    assert cfg.force_new_cluster is False
    assert cfg.auto_compaction_mode == "periodic" and cfg.auto_compaction == 3600.0
    assert cfg.pre_vote is True  # raftkv's default (etcd 3.4: false); the sample has no key
    # the only note at etcd's sample values: pprof, which raftkv cannot serve
    assert [lvl for lvl, _ in cfg.notes] == [logging.WARNING]
    assert "--enable-pprof" in _notes(cfg)


def test_etcds_tls_blocks_in_a_config_file(tmp_path):
    """etcd's config file nests the TLS settings in client-transport-security and
    peer-transport-security; each key lands on the flag of the same meaning."""
    from tests.tlscerts import make_pki

    pki = make_pki(tmp_path)
    text = f"""\
name: m1
listen-client-urls: https://127.0.0.1:2379
listen-peer-urls: https://127.0.0.1:2380
client-transport-security:
  cert-file: {pki.server_cert}
  key-file: {pki.server_key}
  client-cert-auth: true
  trusted-ca-file: {pki.ca}
peer-transport-security:
  cert-file: {pki.server_cert}
  key-file: {pki.server_key}
  client-cert-auth: true
  trusted-ca-file: {pki.ca}
  auto-tls: false
"""
    cfg = _load(yaml_text=text, tmp_path=tmp_path)
    assert (cfg.cert_file, cfg.key_file, cfg.trusted_ca_file) == \
        (pki.server_cert, pki.server_key, pki.ca)
    assert cfg.client_cert_auth and cfg.peer_client_cert_auth and not cfg.peer_auto_tls
    assert (cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file) == \
        (pki.server_cert, pki.server_key, pki.ca)
    with pytest.raises(ConfigError, match="unknown setting 'crl' in client-transport-security"):
        _load(yaml_text="client-transport-security:\n  crl: x\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="must be a mapping"):
        _load(yaml_text="peer-transport-security: yes\n", tmp_path=tmp_path)


def test_etcd_sample_as_it_is_loads_with_a_warning_for_enable_v2(tmp_path):
    """etcd 3.4's sample sets enable-v2: true, and configs are copied from it: accepted with a
    warning (a v2 client fails at once: raftkv has no v2 endpoint)."""
    cfg = _load(yaml_text=ETCD_34_SAMPLE.format(enable_v2="true"), tmp_path=tmp_path)
    assert cfg.enable_v2 is True
    assert (logging.WARNING, "--enable-v2 true is ignored: raftkv serves only the etcd v3 "
            "API; v2 clients (/v2/keys) will fail") in cfg.notes


@pytest.mark.parametrize("argv, message", [
    (["--discovery", "https://discovery.etcd.io/abc"], "no discovery service"),
    (["--discovery-srv", "example.com"], "no discovery service"),
    (["--proxy", "on"], "no v2 proxy mode"),
    (["--proxy", "readonly"], "no v2 proxy mode"),
    (["--experimental-enable-v2v3", "/v2/"], "no v2 API"),
    (["--logger", "glog"], "'zap' or 'capnslog'"),
    (["--discovery-fallback", "retry"], "'exit' or 'proxy'"),
    (["--metrics", "full"], "'basic' or 'extensive'"),
    (["--experimental-backend-bbolt-freelist-type", "tree"], "'array' or 'map'"),
    (["--max-wals", "-1"], "must not be negative"),
    (["--experimental-warning-apply-duration", "fast"], "not a duration"),
    (["--experimental-watch-progress-notify-interval", "0s"], "must be positive"),
    (["--backend-batch-interval", "soon"], "not a duration"),
    (["--log-outputs", ","], "--log-outputs is empty"),
])
def test_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        _load(argv)


@pytest.mark.parametrize("argv, needle", [
    (["--max-wals", "0"], "--max-wals is accepted without effect"),
    (["--max-snapshots", "10"], "--max-snapshots is accepted without effect"),
    (["--log-package-levels", "etcdserver=DEBUG"], "--log-package-levels is ignored"),
    (["--backend-batch-limit", "10000"], "--backend-batch-limit is accepted without effect"),
    (["--experimental-backend-bbolt-freelist-type", "map"], "LMDB, not bbolt"),
    (["--metrics", "extensive"], "one fixed set of metrics"),
    (["--enable-pprof"], "no /debug/pprof"),
    (["--cors", "https://example.com"], "--cors is ignored"),
    (["--discovery-proxy", "http://proxy:3128"], "--discovery-proxy is ignored"),
    (["--discovery-srv-name", "x"], "--discovery-srv-name is ignored"),
    (["--proxy-dial-timeout", "3000"], "--proxy-dial-timeout is ignored"),
])
def test_accepted_with_a_note(argv, needle):
    cfg = _load(argv)
    assert needle in _notes(cfg)


def test_defaults_leave_no_notes():
    cfg = _load()
    assert cfg.notes == []
    assert (cfg.pre_vote, cfg.initial_election_tick_advance, cfg.strict_reconfig_check) == \
        (True, True, True)
    assert cfg.log_targets == ("stderr",) and cfg.log_format == "text"
    assert cfg.warning_apply_s == 0.1 and cfg.watch_progress_s == 600.0
    assert cfg.apply_linger_s is None and cfg.experimental_compaction_batch_limit == 1000


def test_lease_checkpoint_is_implemented_without_a_note(tmp_path):
    for cfg in (_load(["--experimental-enable-lease-checkpoint"]),
                _load(env={"RAFTKV_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT": "true"}),
                _load(yaml_text="experimental-enable-lease-checkpoint: true\n",
                      tmp_path=tmp_path)):
        assert cfg.experimental_enable_lease_checkpoint is True and cfg.notes == []
    assert _load().experimental_enable_lease_checkpoint is False


def test_off_and_empty_values_are_etcds_defaults():
    cfg = _load(["--proxy", "off", "--enable-v2", "false", "--discovery", "",
                 "--experimental-enable-v2v3", "", "--discovery-fallback", "exit"])
    assert cfg.notes == []


def test_implemented_values_from_flags_env_and_yaml(tmp_path):
    log_file = tmp_path / "m.log"
    cfg = _load(["--wal-dir", str(tmp_path / "wal"), "--pre-vote=false",
                 "--initial-election-tick-advance", "false", "--strict-reconfig-check=false",
                 "--experimental-compaction-batch-limit", "50",
                 "--experimental-warning-apply-duration", "250ms",
                 "--experimental-watch-progress-notify-interval", "2s",
                 "--backend-batch-interval", "5ms", "--log-outputs",
                 f"stdout,{log_file}", "--host-whitelist", "a.example,localhost"])
    assert cfg.wal_dir == str(tmp_path / "wal")
    assert (cfg.pre_vote, cfg.initial_election_tick_advance, cfg.strict_reconfig_check) == \
        (False, False, False)
    assert cfg.experimental_compaction_batch_limit == 50
    assert cfg.warning_apply_s == 0.25 and cfg.watch_progress_s == 2.0
    assert cfg.apply_linger_s == 0.005
    assert cfg.log_targets == ("stdout", str(log_file))
    env = {"RAFTKV_PRE_VOTE": "false", "RAFTKV_WAL_DIR": "/w", "RAFTKV_DEBUG": "true",
           "RAFTKV_LOG_OUTPUTS": "default"}
    cfg = _load(env=env)
    assert cfg.pre_vote is False and cfg.wal_dir == "/w" and cfg.log_level == "debug"
    assert cfg.log_targets == ("stderr",)
    cfg = _load(yaml_text="wal-dir: /x\nlog-outputs: [stderr, stdout, default]\n"
                          "experimental-compaction-batch-limit: 0\nbackend-batch-interval: 0\n",
                tmp_path=tmp_path)
    assert cfg.wal_dir == "/x" and cfg.log_targets == ("stderr", "stdout")
    assert cfg.experimental_compaction_batch_limit == 1000  # etcd's 0: the default
    assert cfg.apply_linger_s == 0.0


def test_debug_and_logger():
    assert _load(["--debug"]).log_level == "debug"
    assert _load(["--debug=false", "--log-level", "warn"]).log_level == "warn"
    # zap: JSON unless --log-format says otherwise; capnslog keeps text
    assert _load(["--logger", "zap"]).log_format == "json"
    assert _load(["--logger", "zap", "--log-format", "text"]).log_format == "text"
    assert _load(["--logger", "capnslog"]).log_format == "text"


def test_flag_overrides_yaml(tmp_path):
    cfg = _load(["--pre-vote", "true"], yaml_text="pre-vote: false\n", tmp_path=tmp_path)
    assert cfg.pre_vote is True


@pytest.mark.parametrize("whitelist, host, ok", [
    ("*", "evil.example", True),
    ("", "evil.example", True),
    ("localhost,127.0.0.1", "localhost:2381", True),
    ("localhost,127.0.0.1", "127.0.0.1", True),
    ("localhost,127.0.0.1", "evil.example:2381", False),
    ("localhost,127.0.0.1", "", False),
    ("::1", "[::1]:2381", True),
    ("Example.COM", "example.com", True),
])
def test_host_whitelist(whitelist, host, ok):
    assert _load(["--host-whitelist", whitelist]).host_allowed(host) is ok
