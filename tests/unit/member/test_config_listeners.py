"""--listen-*-urls lists (raftkv/server/config.py listen_urls): every URL becomes a listener,
each URL's scheme decides TLS, unix:// names a socket file (client and native URLs only), and
two listeners on one address are refused with the flags' names."""
import pytest

from raftkv.server.config import ConfigError, ListenURL, listen_urls, load_config
from tests.tlscerts import make_pki


def cfg(*args):
    return load_config(["--name", "m1", *args], environ={})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_every_url_of_a_list_is_a_listener():
    c = cfg("--listen-client-urls", "http://127.0.0.1:2379,http://127.0.0.2:2379",
            "--listen-native-urls", "127.0.0.1:2378,unix:///run/raftkv/native.sock",
            "--listen-peer-urls", "http://127.0.0.1:2380,http://[::1]:2380")
    assert [(u.host, u.port) for u in c.client_listeners] == [("127.0.0.1", 2379),
                                                              ("127.0.0.2", 2379)]
    assert c.native_listeners[1] == ListenURL("unix:///run/raftkv/native.sock", False,
                                              path="/run/raftkv/native.sock")
    assert [u.describe() for u in c.peer_listeners] == ["127.0.0.1:2380", "[::1]:2380"]
    # The default --initial-cluster names this member at each advertised peer URL.
    assert c.cluster_members() == {"m1": ["http://127.0.0.1:2380", "http://[::1]:2380"]}
    assert not c.client_tls and c.metrics_listeners == []


def test_unix_urls_follow_etcds_naming():
    # etcd's rule: the socket file is what follows the scheme (host and path together).
    urls = listen_urls("unix://localhost:2379,unixs:///tmp/s.sock", "--listen-client-urls",
                       unix_ok=True)
    assert [(u.path, u.tls, u.unix) for u in urls] == [("localhost:2379", False, True),
                                                       ("/tmp/s.sock", True, True)]
    assert urls[0].describe() == "unix:localhost:2379"


def test_unix_urls_are_refused_where_not_served():
    with pytest.raises(ConfigError, match="--listen-peer-urls.*Unix sockets"):
        cfg("--listen-peer-urls", "unix://peer.sock")
    with pytest.raises(ConfigError, match="--listen-metrics-urls.*Unix sockets"):
        cfg("--listen-metrics-urls", "unix://m.sock")
    with pytest.raises(ConfigError, match="bad URL"):  # peers are dialled over TCP
        cfg("--initial-cluster", "m1=unix://127.0.0.1:2380")


def test_other_schemes_are_refused():
    with pytest.raises(ConfigError, match="expected http://, https://, unix:// or unixs://"):
        cfg("--listen-client-urls", "ftp://127.0.0.1:2379")
    with pytest.raises(ConfigError, match="--listen-native-urls"):
        cfg("--listen-native-urls", "http://127.0.0.1")  # no port


def test_one_address_twice_is_refused():
    with pytest.raises(ConfigError, match="127.0.0.1:2379 is already taken by "
                                          "--listen-client-urls"):
        cfg("--listen-client-urls", "http://127.0.0.1:2379,https://127.0.0.1:2379")
    with pytest.raises(ConfigError, match="--listen-native-urls"):
        cfg("--listen-native-urls", "http://127.0.0.1:2379")  # the default client URL's
    with pytest.raises(ConfigError, match="unix:c.sock"):
        cfg("--listen-client-urls", "unix://c.sock", "--listen-native-urls", "unix://c.sock")
    # Port 0 (the OS picks) may appear more than once.
    c = cfg("--listen-client-urls", "http://127.0.0.1:0", "--listen-native-urls",
            "http://127.0.0.1:0", "--listen-peer-urls", "http://127.0.0.1:0")
    assert len(c.client_listeners) == 1


def test_each_urls_scheme_decides_tls(pki):
    files = ["--cert-file", pki.server_cert, "--key-file", pki.server_key]
    c = cfg("--listen-client-urls", "http://127.0.0.1:2379,https://127.0.0.2:2379", *files)
    assert [u.tls for u in c.client_listeners] == [False, True]
    assert c.grpc_tls and c.client_tls and not c.native_tls
    with pytest.raises(ConfigError, match="--cert-file and --key-file"):
        cfg("--listen-client-urls", "http://127.0.0.1:2379,unixs://c.sock")
    c = cfg("--listen-metrics-urls", "https://127.0.0.1:2381", *files)
    assert c.metrics_tls and c.tls_contexts()[0] is not None
