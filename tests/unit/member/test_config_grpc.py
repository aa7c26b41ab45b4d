"""etcd's gRPC server flags in the member's config (raftkv/server/config.py): durations parsed
with _duration_s, bad values stop the start naming the flag, and what serve() gives grpc.aio."""
import pytest

from raftkv.api.etcd.server import GrpcLimits
from raftkv.api.serve import _grpc_limits
from raftkv.server.config import ConfigError, load_config


def cfg(*args, environ=None):
    return load_config(["--name", "m1", *args], environ=environ or {})


def test_defaults_are_etcds():
    c = cfg()
    assert c.grpc_keepalive_s == (5.0, 7200.0, 20.0)
    assert c.max_concurrent_streams == (1 << 32) - 1
    assert _grpc_limits(c) == GrpcLimits()


def test_values_from_flags_and_environment():
    c = cfg("--grpc-keepalive-min-time", "500ms", "--grpc-keepalive-interval", "1h30m",
            "--grpc-keepalive-timeout", "0", "--max-concurrent-streams", "100")
    assert c.grpc_keepalive_s == (0.5, 5400.0, 0.0)
    assert _grpc_limits(c) == GrpcLimits(500, 5_400_000, 0, 100)
    c = cfg(environ={"RAFTKV_GRPC_KEEPALIVE_INTERVAL": "0s",
                     "RAFTKV_MAX_CONCURRENT_STREAMS": "1"})
    assert c.grpc_keepalive_s[1] == 0.0 and c.max_concurrent_streams == 1


@pytest.mark.parametrize("args,flag", [
    (["--grpc-keepalive-min-time", "0s"], "--grpc-keepalive-min-time"),
    (["--grpc-keepalive-min-time", "5"], "--grpc-keepalive-min-time"),  # no unit
    (["--grpc-keepalive-interval", "often"], "--grpc-keepalive-interval"),
    (["--grpc-keepalive-interval=-1s"], "--grpc-keepalive-interval"),
    (["--grpc-keepalive-timeout", "20 s"], "--grpc-keepalive-timeout"),
    (["--max-concurrent-streams", "0"], "--max-concurrent-streams"),
    (["--max-concurrent-streams", str(1 << 32)], "--max-concurrent-streams"),
    (["--max-concurrent-streams", "many"], "--max-concurrent-streams"),
])
def test_bad_values_name_the_flag(args, flag):
    with pytest.raises(ConfigError, match=flag):
        cfg(*args)
