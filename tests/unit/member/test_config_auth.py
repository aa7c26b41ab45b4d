"""The member's auth flags (raftkv/server/config.py): etcd's names and defaults; what raftkv
does not support stops the start with the flag's name."""
import pytest

from raftkv.errors import RaftkvError
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
    (["--auth-token", "jwt,pub-key=a.pem,priv-key=b.pem,sign-method=RS256"], "b.pem"),
    (["--auth-token-ttl", "0"], "--auth-token-ttl"),
    (["--bcrypt-cost", "3"], "--bcrypt-cost"),
    (["--bcrypt-cost", "17"], "--bcrypt-cost"),
    (["--bcrypt-cost", "ten"], "bcrypt"),
])
def test_unsupported_values_name_the_flag(args, flag):
    with pytest.raises(ConfigError, match=flag):
        cfg(*args)


def _keys(tmp_path):
    from tests.unit.mvcc.test_auth import _pem_pair

    priv, pub = _pem_pair("rsa")
    (tmp_path / "k.pem").write_bytes(priv)
    (tmp_path / "k.pub").write_bytes(pub)
    return str(tmp_path / "k.pem"), str(tmp_path / "k.pub")


def test_jwt_tokens_from_etcds_flag(tmp_path):
    priv, pub = _keys(tmp_path)
    c = cfg("--auth-token", f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256,ttl=10m")
    tokens = c.jwt_tokens()
    assert tokens.method == "RS256" and tokens.ttl_s == 600
    assert tokens.check(tokens.sign("u", 0), 0) == "u"
    assert cfg().jwt_tokens() is None


def test_a_verify_only_member_checks_but_does_not_sign(tmp_path):
    """etcd's verify-only members: pub-key alone checks the tokens other members signed."""
    priv, pub = _keys(tmp_path)
    signer = cfg("--auth-token", f"jwt,pub-key={pub},priv-key={priv},sign-method=RS256")
    checker = cfg("--auth-token", f"jwt,pub-key={pub},sign-method=RS256").jwt_tokens()
    assert checker.verify_only and not signer.jwt_tokens().verify_only
    assert checker.check(signer.jwt_tokens().sign("u", 3), 3) == "u"
    with pytest.raises(RaftkvError) as err:
        checker.sign("u", 3)
    assert err.value.code == "AUTH_VERIFY_ONLY"
    assert str(err.value) == "auth: token signing attempted with verify-only key"
    (tmp_path / "bad.pub").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="--auth-token jwt"):
        cfg("--auth-token", f"jwt,pub-key={tmp_path / 'bad.pub'},sign-method=RS256")


@pytest.mark.parametrize("spec,words", [
    ("jwt,sign-method=RS256", "needs priv-key=... \\(to sign tokens\\), pub-key"),
    ("jwt,pub-key={pub},sign-method=HS256", "needs priv-key"),
    ("jwt,priv-key={priv},pub-key={pub}", "needs sign-method"),
    ("jwt,priv-key={priv},pub-key={pub},sign-method=RS256,color=red", "unknown jwt option"),
    ("jwt,priv-key=/nonexistent.pem,pub-key={pub},sign-method=RS256", "/nonexistent.pem"),
    ("jwt,priv-key={priv},pub-key={pub},sign-method=ES256", "--auth-token jwt"),
    ("jwt,priv-key={priv},pub-key={pub},sign-method=RS256,ttl=5 minutes", "ttl"),
    ("jwt,priv-key={priv},sign-method=RS256", "pub-key"),
    ("oauth", "expected 'simple' or 'jwt"),
])
def test_bad_jwt_specs_name_the_problem(tmp_path, spec, words):
    priv, pub = _keys(tmp_path)
    with pytest.raises(ConfigError, match=words):
        cfg("--auth-token", spec.format(priv=priv, pub=pub))
