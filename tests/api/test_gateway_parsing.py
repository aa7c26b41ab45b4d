"""raftkv/api/gateway.py's request parsing, in-process: streamed JSON requests cut anywhere,
unknown fields, enum names, and the headers that become gRPC metadata."""
import asyncio
import json

import pytest

from raftkv.api import gateway
from raftkv.api.etcd.proto import rpc_pb2


class Chunks:
    """An aiohttp StreamReader stand-in: readany() gives the chunks, then b""."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    async def readany(self):
        return self.chunks.pop(0) if self.chunks else b""


def values(chunks, max_chars=1 << 20):
    async def run():
        return [v async for v in gateway.json_values(Chunks(chunks), max_chars)]
    return asyncio.run(run())


DOCS = [{"create_request": {"key": "Zm9v", "start_revision": 12}}, {"progress_request": {}},
        {"cancel_request": {"watch_id": 3}}, {"x": "é€"}]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_streamed_values_cut_anywhere(size):
    data = (json.dumps(DOCS[0]) + "\n" + json.dumps(DOCS[1]) + " " + json.dumps(DOCS[2]) +
            json.dumps(DOCS[3], ensure_ascii=False) + "\n").encode()
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assert values(chunks) == DOCS


def test_a_number_split_across_chunks_is_read_whole():
    assert values([b"12", b"34", b" 5"]) == [1234, 5]


def test_bad_or_oversized_stream_values_fail():
    with pytest.raises(gateway.GatewayError) as err:
        values([b'{"a": 1} garbage'])
    assert err.value.code == gateway.INVALID_ARGUMENT
    with pytest.raises(gateway.GatewayError):
        values([b'{"a": "' + b"x" * 100], max_chars=50)
    with pytest.raises(gateway.GatewayError):
        values([b'{"a": "\xff"}'])
    assert values([b"", b""]) == [] and values([b"  \n"]) == []


def test_first_value_and_to_message():
    assert gateway.first_value(b"") is None and gateway.first_value(b" null ") is None
    assert gateway.first_value(b'{"key": "YQ=="} rest is ignored') == {"key": "YQ=="}
    msg = gateway.to_message({"key": "YQ==", "sortOrder": "DESCEND", "limit": "5",
                              "nope": {"deep": 1}}, rpc_pb2.RangeRequest)
    assert (msg.key, msg.sort_order, msg.limit) == (b"a", rpc_pb2.RangeRequest.DESCEND, 5)
    txn = gateway.to_message({"success": [{"request_put": {"key": "YQ==", "junk": 1}},
                                          {"requestRange": {"key": "Yg=="}}],
                              "compare": [{"key": "YQ==", "result": "EQUAL", "x": 2}]},
                             rpc_pb2.TxnRequest)
    assert txn.success[0].request_put.key == b"a" and txn.success[1].request_range.key == b"b"
    for bad in ([1], "s", {"sort_order": "BOGUS"}, {"key": "!!!"}, {"limit": "abc"}):
        with pytest.raises(gateway.GatewayError) as err:
            gateway.to_message(bad, rpc_pb2.RangeRequest)
        assert err.value.code == gateway.INVALID_ARGUMENT


def test_headers_become_metadata():
    md = gateway.metadata({"Authorization": "tok", "Grpc-Metadata-Hasleader": "true",
                           "Content-Type": "application/json", "Grpc-Metadata-": "x"})
    assert sorted(md) == [("authorization", "tok"), ("hasleader", "true")]
    assert md[0].key in ("authorization", "hasleader")


def test_every_path_names_an_rpc_of_the_proto():
    for path, (service, method) in gateway.PATHS.items():
        proto = gateway.PROTOS[service]
        desc = proto.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        assert getattr(proto, desc.input_type.name), path
    assert gateway.HTTP_STATUS[9] == 412 and gateway.HTTP_STATUS[16] == 401
