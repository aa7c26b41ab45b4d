"""The client port's classifier (raftkv/api/mux.py): the first bytes of a connection decide
gRPC or HTTP/1.x, plaintext by the HTTP/2 preface or a request line, TLS by the ClientHello's
ALPN offer (real ClientHellos, made by Python's ssl module through a memory BIO)."""
import ssl

import pytest

from raftkv.api.mux import (GARBAGE, GRPC, HTTP, MORE, PREFACE, classify_plain, classify_tls,
                            client_hello_alpn)


def test_the_http2_preface_is_grpc_and_its_prefixes_ask_for_more():
    assert classify_plain(PREFACE) == GRPC
    assert classify_plain(PREFACE + b"\x00\x00\x12\x04") == GRPC
    for n in range(len(PREFACE)):
        assert classify_plain(PREFACE[:n]) == MORE


@pytest.mark.parametrize("line", [b"GET /health HTTP/1.1\r\n", b"POST /v3/kv/put HTTP/1.1\r\n",
                                  b"HEAD /version HTTP/1.0\r\n", b"OPTIONS * HTTP/1.1\r\n",
                                  b"PUT /x HTTP/1.1\r\n", b"DELETE /x HTTP/1.1\r\n"])
def test_http1_request_lines_are_http_and_their_prefixes_ask_for_more(line):
    assert classify_plain(line) == HTTP
    method = line.split(b" ")[0]
    for n in range(1, len(method) + 1):
        assert classify_plain(line[:n]) == MORE


@pytest.mark.parametrize("data", [b"\x16\x03\x01\x02\x00\x01", b"hello\r\n", b"get / HTTP/1.1",
                                  b"GETX / HTTP/1.1", b"PRI * HTTP/1.1\r\n", b"\x00" * 30,
                                  b"SSH-2.0-OpenSSH_9.6\r\n"])
def test_anything_else_is_garbage(data):
    assert classify_plain(data) == GARBAGE


def _client_hello(alpn):
    """The bytes Python's ssl client sends first, offering alpn (None: no ALPN)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("alpn, kind", [
    (["h2"], GRPC),  # grpc-go (etcdctl, clientv3)
    (["grpc-exp", "h2"], GRPC),  # grpcio
    (["h2", "http/1.1"], HTTP),  # curl
    (["http/1.1"], HTTP),  # Python's http.client, Go's net/http without HTTP/2
    (None, HTTP),  # no ALPN: an HTTP/1.1 client
    (["spdy/3"], HTTP),
])
def test_tls_goes_by_the_alpn_offer(alpn, kind):
    hello = _client_hello(alpn)
    assert client_hello_alpn(hello) == (HTTP, [p.encode() for p in alpn or []])
    assert classify_tls(hello) == kind
    for n in (0, 1, 2, 4, 5, len(hello) // 2, len(hello) - 1):  # an incomplete record
        assert classify_tls(hello[:n]) == MORE


@pytest.mark.parametrize("data", [PREFACE, b"GET / HTTP/1.1\r\n", b"\x15\x03\x03\x00\x02\x02\x28",
                                  b"\x16\x02\x00\x00\x05", b"\x16\x03\x01\x00\x00",
                                  b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"])
def test_tls_listeners_close_what_is_not_a_client_hello(data):
    assert classify_tls(data) == GARBAGE


def test_a_truncated_hello_body_is_read_as_far_as_it_goes():
    hello = bytearray(_client_hello(["h2"]))
    # Cut the record short but say so in its length: the ALPN extension is then beyond it.
    cut = hello[:60]
    cut[3:5] = (len(cut) - 5).to_bytes(2, "big")
    assert classify_tls(bytes(cut)) == HTTP
