"""The peer listener's checks of a connecting peer's certificate (raftkv/server/peer.py
_check_certificate): --peer-crl-file refuses a revoked serial, and etcd's SAN check refuses a
certificate whose SANs do not cover the address the peer connects from, unless
--experimental-peer-skip-client-san-verification (check_san=False) turns it off."""
import asyncio
import logging
import ssl

import msgpack
import pytest

from raftkv import tls
from raftkv.server.peer import PeerTransport
from tests.tlscerts import make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def _answer(op, body):
    return {}


def _dial(port, source, cert, key, ca):
    """Connect from source with cert, send a hello with another cluster's token, and wait for
    the listener to close the connection."""
    async def run():
        ctx = tls.client_context(ca, cert, key)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1", local_addr=(source, 0))
        body = msgpack.packb({"token": "another-cluster", "from": 1, "to": 2})
        writer.write(len(body).to_bytes(4, "big") + body)
        try:
            await asyncio.wait_for(reader.read(), 5)
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()
    return run()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("check_san", [True, False])
def test_san_check_and_crl(pki, caplog, check_san):
    caplog.set_level(logging.INFO, logger="raftkv.peer")

    async def main():
        server_ctx = tls.server_context(pki.server_cert, pki.server_key, pki.ca, True)
        t = PeerTransport(2, "this-cluster", {}, "127.0.0.1", on_message=lambda m: None,
                          on_forward=_answer, ssl_server=server_ctx,
                          cert_check=tls.CertCheck(pki.crl, crl_flag="--peer-crl-file"),
                          check_san=check_san)
        port = await t.start("127.0.0.1", 0)
        try:
            # The member certificate's SANs are 127.0.0.1, ::1 and localhost.
            await _dial(port, "127.0.0.1", pki.server_cert, pki.server_key, pki.ca)
            await _dial(port, "127.0.0.2", pki.server_cert, pki.server_key, pki.ca)
            # The revoked certificate has no SANs (nothing for the SAN check to refuse).
            await _dial(port, "127.0.0.3", pki.revoked_cert, pki.revoked_key, pki.ca)
        finally:
            await t.close()
    asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]

    def about(source):
        return [line for line in lines if f"('{source}'" in line]
    assert any("cluster token" in line for line in about("127.0.0.1")), lines
    san_refused = [line for line in about("127.0.0.2") if "SANs do not cover" in line]
    if check_san:
        assert san_refused and not any("cluster token" in x for x in about("127.0.0.2"))
    else:
        assert not san_refused and any("cluster token" in x for x in about("127.0.0.2"))
    assert any("revoked (--peer-crl-file)" in line for line in about("127.0.0.3")), lines
