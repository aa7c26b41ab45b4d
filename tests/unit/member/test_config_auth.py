"""The member's auth flags (raftkv/server/config.py): etcd's names and defaults; what raftkv
does not support stops the start with the flag's name."""
import pytest

from raftkv.server.config import ConfigError, load_config


def cfg(*args, environ=None):
    return load_config(["--name", "m1", *args], environ=environ or {})


def test_defaults_are_etcds():
    c = cfg()
    assert (c.auth_token, c.auth_token_ttl, c.bcrypt_cost) == ("simple", 300, 10)


def test_values_from_flags_and_environment():
    c = cfg("--auth-token-ttl", "60", "--bcrypt-cost", "4")
    assert (c.auth_token_ttl, c.bcrypt_cost) == (60, 4)
    assert cfg(environ={"RAFTKV_BCRYPT_COST": "12"}).bcrypt_cost == 12


@pytest.mark.parametrize("args,flag", [
    (["--auth-token", "jwt,pub-key=a.pem,priv-key=b.pem,sign-method=RS256"], "--auth-token"),
    (["--auth-token-ttl", "0"], "--auth-token-ttl"),
    (["--bcrypt-cost", "3"], "--bcrypt-cost"),
    (["--bcrypt-cost", "17"], "--bcrypt-cost"),
    (["--bcrypt-cost", "ten"], "bcrypt"),
])
def test_unsupported_values_name_the_flag(args, flag):
    with pytest.raises(ConfigError, match=flag):
        cfg(*args)
