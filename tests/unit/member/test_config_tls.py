"""The member's TLS flags (raftkv/server/config.py): https:// URLs need their files, the files
must load, boolean flags stand alone or take a value, and the mistakes an operator can make
stop the start with the flag's name."""
import os
import ssl

import pytest

from raftkv.server.config import ConfigError, load_config
from tests.tlscerts import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def cfg(*args):
    return load_config(["--name", "m1", *args], environ={})


def https(pki, *extra):
    return ["--listen-client-urls", "https://127.0.0.1:2379",
            "--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key), *extra]


def test_plain_urls_need_no_files():
    c = cfg()
    assert not c.client_tls and not c.peer_tls
    assert c.tls_contexts() == (None, None, None)


def test_https_client_urls_load_the_certificate(pki):
    c = cfg(*https(pki))
    assert c.client_tls and not c.peer_tls
    client, peer_in, peer_out = c.tls_contexts()
    assert client is not None and peer_in is None and peer_out is None


def test_https_without_certificate_is_refused():
    with pytest.raises(ConfigError, match="--cert-file and --key-file"):
        cfg("--listen-client-urls", "https://127.0.0.1:2379")
    with pytest.raises(ConfigError, match="--cert-file and --key-file"):
        cfg("--listen-native-urls", "https://127.0.0.1:2378")


def test_a_bad_file_is_named(pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="garbage.pem"):
        cfg("--listen-client-urls", "https://127.0.0.1:2379", "--cert-file", str(garbage),
            "--key-file", str(pki.server_key))
    with pytest.raises(ConfigError, match="missing.pem"):
        cfg(*https(pki, "--client-cert-auth", "--trusted-ca-file", str(tmp_path / "missing.pem")))


def test_client_cert_auth_needs_a_ca_and_may_stand_alone(pki):
    with pytest.raises(ConfigError, match="--client-cert-auth needs --trusted-ca-file"):
        cfg(*https(pki, "--client-cert-auth"))
    c = cfg(*https(pki, "--client-cert-auth", "--trusted-ca-file", str(pki.ca)))
    assert c.client_cert_auth is True
    assert cfg(*https(pki, "--client-cert-auth", "false")).client_cert_auth is False
    env = load_config(["--name", "m1", *https(pki)], environ={"RAFTKV_CLIENT_CERT_AUTH": "1",
                                                             "RAFTKV_TRUSTED_CA_FILE": str(pki.ca)})
    assert env.client_cert_auth is True
    with pytest.raises(ConfigError, match="--client-cert-auth: 'maybe' is not a valid bool"):
        cfg(*https(pki, "--client-cert-auth", "maybe"))


def test_peer_tls_needs_peer_files_and_one_scheme(pki):
    peer = ["--listen-peer-urls", "https://127.0.0.1:2380",
            "--initial-cluster", "m1=https://127.0.0.1:2380"]
    with pytest.raises(ConfigError, match="--peer-cert-file and --peer-key-file"):
        cfg(*peer)
    files = ["--peer-cert-file", str(pki.server_cert), "--peer-key-file", str(pki.server_key),
             "--peer-trusted-ca-file", str(pki.ca), "--peer-client-cert-auth"]
    c = cfg(*peer, *files)
    assert c.peer_tls and not c.client_tls
    _, peer_in, peer_out = c.tls_contexts()
    assert peer_in is not None and peer_out is not None
    with pytest.raises(ConfigError, match="mix http:// and https://"):
        cfg("--listen-peer-urls", "https://127.0.0.1:2380", "--initial-cluster",
            "m1=https://127.0.0.1:2380,m2=http://127.0.0.1:2390", *files)


def test_grpc_workers_with_tls_are_accepted(pki):
    c = cfg(*https(pki, "--grpc-workers", "2"))
    assert c.grpc_tls and c.grpc_workers == 2


def test_peer_cert_allowed_cn_needs_checked_peer_certificates(pki):
    with pytest.raises(ConfigError, match="--peer-cert-allowed-cn needs"):
        cfg("--peer-cert-allowed-cn", "m")
    peers = ["--listen-peer-urls", "https://127.0.0.1:2380",
             "--initial-cluster", "m1=https://127.0.0.1:2380",
             "--peer-cert-file", str(pki.server_cert), "--peer-key-file", str(pki.server_key),
             "--peer-trusted-ca-file", str(pki.ca)]
    with pytest.raises(ConfigError, match="--peer-client-cert-auth"):
        cfg(*peers, "--peer-cert-allowed-cn", "m")
    c = cfg(*peers, "--peer-client-cert-auth", "--peer-cert-allowed-cn", "m")
    assert c.peer_cert_allowed_cn == "m"


def test_peer_cert_allowed_hostname_and_cn_are_exclusive(pki):
    peers = ["--listen-peer-urls", "https://127.0.0.1:2380",
             "--initial-cluster", "m1=https://127.0.0.1:2380",
             "--peer-cert-file", str(pki.server_cert), "--peer-key-file", str(pki.server_key),
             "--peer-trusted-ca-file", str(pki.ca), "--peer-client-cert-auth"]
    assert cfg(*peers, "--peer-cert-allowed-hostname", "h").peer_cert_allowed_hostname == "h"
    with pytest.raises(ConfigError, match="mutually exclusive"):
        cfg(*peers, "--peer-cert-allowed-hostname", "h", "--peer-cert-allowed-cn", "m")
    with pytest.raises(ConfigError, match="--peer-cert-allowed-hostname needs"):
        cfg("--peer-cert-allowed-hostname", "h")


def test_auto_tls_makes_certificates_in_the_data_dir(tmp_path):
    data = str(tmp_path / "m1.raftkv")
    c = cfg("--data-dir", data, "--listen-client-urls", "https://127.0.0.1:2379",
            "--listen-peer-urls", "https://127.0.0.1:2380", "--auto-tls", "--peer-auto-tls")
    assert c.client_cert_paths() == (f"{data}/fixtures/client/cert.pem",
                                     f"{data}/fixtures/client/key.pem")
    client, peer_in, peer_out = c.tls_contexts()
    assert peer_out.verify_mode == ssl.CERT_NONE  # self-signed peers are not verified
    assert peer_in.verify_mode == ssl.CERT_NONE
    assert sorted(os.listdir(f"{data}/fixtures")) == ["client", "peer"]
    # The store accepts a data dir holding only the fixtures (made before it opens).
    from raftkv.storage.engine import Engine
    Engine(data).close()


def test_auto_tls_gives_way_to_files_and_needs_both_missing(pki, tmp_path):
    c = cfg(*https(pki, "--auto-tls", "--data-dir", str(tmp_path / "d")))
    assert c.client_cert_paths() == (pki.server_cert, pki.server_key)
    assert not os.path.exists(tmp_path / "d")
    with pytest.raises(ConfigError, match="--cert-file and --key-file \\(or --auto-tls"):
        cfg("--listen-client-urls", "https://127.0.0.1:2379", "--auto-tls",
            "--cert-file", pki.server_cert, "--data-dir", str(tmp_path / "e"))
    with pytest.raises(ConfigError, match="--peer-client-cert-auth needs"):
        cfg("--listen-peer-urls", "https://127.0.0.1:2380", "--peer-auto-tls",
            "--peer-client-cert-auth", "--data-dir", str(tmp_path / "f"))


def test_crl_files_load_at_start(pki, tmp_path):
    c = cfg(*https(pki, "--client-crl-file", pki.crl))
    client_check, peer_check = c.cert_checks()
    assert client_check and not peer_check
    with pytest.raises(ConfigError, match="--client-crl-file .*missing.crl"):
        cfg(*https(pki, "--client-crl-file", str(tmp_path / "missing.crl")))


def test_cipher_suites(pki):
    c = cfg(*https(pki, "--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"))
    assert c.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256"
    client, _, _ = c.tls_contexts()
    assert [x["name"] for x in client.get_ciphers() if x["protocol"] == "TLSv1.2"] == \
        ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    with pytest.raises(ConfigError, match="--cipher-suites: unknown cipher suite"):
        cfg(*https(pki, "--cipher-suites", "TLS_AES_128_GCM_SHA256"))


def test_client_cert_allowed_hostname_needs_client_cert_auth(pki):
    with pytest.raises(ConfigError, match="--client-cert-allowed-hostname needs"):
        cfg(*https(pki, "--client-cert-allowed-hostname", "h"))
    c = cfg(*https(pki, "--client-cert-auth", "--trusted-ca-file", pki.ca,
                   "--client-cert-allowed-hostname", "h"))
    assert c.cert_checks()[0].allowed_hostname == "h"
    assert cfg("--experimental-peer-skip-client-san-verification") \
        .experimental_peer_skip_client_san_verification is True
