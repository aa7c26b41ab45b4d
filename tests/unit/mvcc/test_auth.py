"""The auth store (raftkv/mvcc/auth.py): its log ops with etcd's errors, the permission checks
(key, range, prefix and from-key grants, merged across roles), the checks of client writes in
apply, tokens, passwords, and that the state survives a reopen and travels in snapshots."""
import pytest
from hypothesis import given, settings, strategies as st

from raftkv.errors import RaftkvError
from raftkv.mvcc import auth
from tests.unit.mvcc.helpers import Harness

U = auth.USER_FIELD
ROOT_HASH = auth.hash_password("rootpw", cost=4)


def _err(h, op, body):
    with pytest.raises(RaftkvError) as info:
        h.one(op, body)
    return info.value.code


def _setup(h, enable=True):
    """root (root role) and alice, whose role reader may read a/ and write a/mine and z..."""
    h.one("user_add", {"name": "root", "password": ROOT_HASH})
    h.one("user_grant_role", {"user": "root", "role": "root"})
    h.one("user_add", {"name": "alice", "password": auth.hash_password("pw", cost=4)})
    h.one("role_add", {"name": "reader"})
    grants = [(auth.READ, b"a/", b"a0"), (auth.READWRITE, b"a/mine", b""),
              (auth.WRITE, b"z", b"\0")]
    for perm_type, key, end in grants:
        h.one("role_grant_permission", {"name": "reader", "perm": {
            "permType": perm_type, "key": key, "range_end": end}})
    h.one("user_grant_role", {"user": "alice", "role": "reader"})
    if enable:
        h.one("auth_enable", {})


def test_management_errors_are_etcds(h):
    assert _err(h, "auth_enable", {}) == "ROOT_USER_NOT_EXIST"
    h.one("user_add", {"name": "root", "password": ROOT_HASH})
    assert _err(h, "user_add", {"name": "root", "password": ROOT_HASH}) == "USER_ALREADY_EXIST"
    assert _err(h, "user_add", {"name": ""}) == "USER_EMPTY"
    assert _err(h, "auth_enable", {}) == "ROOT_ROLE_NOT_EXIST"
    assert _err(h, "user_grant_role", {"user": "root", "role": "nope"}) == "ROLE_NOT_FOUND"
    assert _err(h, "user_grant_role", {"user": "bob", "role": "root"}) == "USER_NOT_FOUND"
    h.one("user_grant_role", {"user": "root", "role": "root"})  # root needs no role record
    h.one("user_grant_role", {"user": "root", "role": "root"})  # granted twice: no error
    assert _err(h, "role_add", {"name": ""}) == "ROLE_EMPTY"
    h.one("role_add", {"name": "r"})
    assert _err(h, "role_add", {"name": "r"}) == "ROLE_ALREADY_EXIST"
    assert _err(h, "role_revoke_permission", {"role": "r", "key": b"k"}) == \
        "PERMISSION_NOT_GRANTED"
    assert _err(h, "user_revoke_role", {"name": "root", "role": "r"}) == "ROLE_NOT_GRANTED"
    h.one("auth_enable", {})
    assert h.store.auth.status() == {"enabled": True, "authRevision": 4}
    h.one("auth_enable", {})  # enabled already: nothing changes
    assert h.store.auth.revision == 4
    for op, body in [("user_delete", {"name": "root"}),
                     ("user_revoke_role", {"name": "root", "role": "root"}),
                     ("role_delete", {"role": "root"})]:
        assert _err(h, op, body) == "INVALID_AUTH_MGMT"
    assert _err(h, "user_delete", {"name": "bob"}) == "USER_NOT_FOUND"
    assert _err(h, "role_delete", {"role": "bob"}) == "ROLE_NOT_FOUND"


def test_grants_are_sorted_replaced_and_revoked(h):
    h.one("role_add", {"name": "r"})
    for perm_type, key in [(auth.READ, b"b"), (auth.WRITE, b"a"), (auth.READWRITE, b"b")]:
        h.one("role_grant_permission", {"name": "r", "perm": {
            "permType": perm_type, "key": key, "range_end": b""}})
    assert h.store.auth.role_permissions("r") == [
        {"permType": auth.WRITE, "key": b"a", "range_end": b""},
        {"permType": auth.READWRITE, "key": b"b", "range_end": b""}]
    h.one("role_revoke_permission", {"role": "r", "key": b"a"})
    assert [p["key"] for p in h.store.auth.role_permissions("r")] == [b"b"]
    h.one("user_add", {"name": "u", "no_password": True})
    h.one("user_grant_role", {"user": "u", "role": "r"})
    h.one("role_delete", {"role": "r"})  # also taken from its users
    assert h.store.auth.user_roles("u") == []


def test_grants_keep_etcds_order_and_duplicates(h):
    """As etcd 3.4.23 (measured; differential_auth): a grant updates only the first
    permission with a key >= its key if that is the same range, else it is appended and the
    list sorted stably by key, so equal keys stay in grant order and a range may be listed
    twice."""
    h.one("role_add", {"name": "r"})
    for perm_type, key, end in [(auth.READ, b"b", b"c"), (auth.READ, b"b", b""),
                                (auth.WRITE, b"a", b""), (auth.READWRITE, b"b", b""),
                                (auth.WRITE, b"b", b"c")]:
        h.one("role_grant_permission", {"name": "r", "perm": {
            "permType": perm_type, "key": key, "range_end": end}})
    assert [(p["permType"], p["key"], p["range_end"])
            for p in h.store.auth.role_permissions("r")] == [
        (auth.WRITE, b"a", b""), (auth.WRITE, b"b", b"c"), (auth.READ, b"b", b""),
        (auth.READWRITE, b"b", b"")]
    h.one("role_revoke_permission", {"role": "r", "key": b"b"})  # both copies go
    assert len(h.store.auth.role_permissions("r")) == 2


def test_a_permission_with_an_empty_key_grants_nothing(h):
    """etcd 3.4.23 (measured): an empty key sorts above every key in its interval tree, so
    ("", "\0") grants no key (etcdctl sends "\0" for all keys)."""
    _setup(h, enable=False)
    h.one("role_grant_permission", {"name": "reader", "perm": {
        "permType": auth.READWRITE, "key": b"", "range_end": b"\0"}})
    h.one("auth_enable", {})
    with pytest.raises(RaftkvError) as info:
        h.store.auth.check_read("alice", b"x", b"")
    assert info.value.code == "PERMISSION_DENIED"
    h.store.auth.check_read("alice", b"a/x", b"")


@pytest.mark.parametrize("key,end,ok", [
    (b"a/x", b"", True), (b"a/", b"a0", True), (b"a/b", b"a/c", True),
    (b"a", b"", False), (b"a/", b"\0", False), (b"a/", b"b", False), (b"b", b"", False),
    # A backwards or empty range needs its start key, as etcd 3.4 decides (measured).
    (b"a/x", b"a/", True), (b"a/x", b"a/x", True), (b"b", b"a", False),
])
def test_read_checks(h, key, end, ok):
    _setup(h)
    store = h.store.auth
    if ok:
        store.check_read("alice", key, end)
    else:
        with pytest.raises(RaftkvError) as info:
            store.check_read("alice", key, end)
        assert info.value.code == "PERMISSION_DENIED"
    store.check_read("root", b"", b"\0")  # the root role may read everything


def test_checks_need_a_known_user_once_enabled(h):
    _setup(h, enable=False)
    h.store.auth.check_read("", b"secret", b"")  # auth off: no checks at all
    h.one("auth_enable", {})
    for user, code in [("", "USER_EMPTY"), ("ghost", "PERMISSION_DENIED")]:
        with pytest.raises(RaftkvError) as info:
            h.store.auth.check_read(user, b"a/x", b"")
        assert info.value.code == code
    with pytest.raises(RaftkvError):
        h.store.auth.check_admin("alice")
    h.store.auth.check_admin("root")


def test_client_writes_are_checked_in_apply(h):
    _setup(h)
    ok = [("put", {"key": b"a/mine", "value": b"v"}), ("put", {"key": b"zz", "value": b"v"}),
          ("delete_range", {"key": b"a/mine"}),
          ("txn", {"compare": [{"key": b"a/x", "target": 3, "value": b"v", "result": 0}],
                   "success": [{"request_put": {"key": b"a/mine", "value": b"1"}}],
                   "failure": [{"request_range": {"key": b"a/", "range_end": b"a0"}}]}),
          ("puts", {"kvs": [b"a/mine", b"1", b"zzz", b"2"]}),
          ("lease_grant", {"TTL": 60}), ("compact", {"revision": 1})]
    for op, body in ok:
        h.one(op, dict(body, **{U: "alice"}))
    denied = [("put", {"key": b"a/x", "value": b"v"}),  # read-only there
              ("put", {"key": b"zz", "value": b"v", "prev_kv": True}),  # cannot read zz
              ("delete_range", {"key": b"a/", "range_end": b"a0"}),
              ("txn", {"compare": [{"key": b"secret", "target": 0, "result": 0}]}),
              ("txn", {"failure": [{"request_txn": {
                  "success": [{"request_delete_range": {"key": b"b"}}]}}]}),
              ("puts", {"kvs": [b"a/mine", b"1", b"b", b"2"]}),
              ("user_add", {"name": "eve", "no_password": True}),
              ("auth_disable", {})]
    before = h.store.current_revision
    for op, body in denied:
        assert _err(h, op, dict(body, **{U: "alice"})) == "PERMISSION_DENIED", (op, body)
    assert h.store.current_revision == before  # nothing of a denied write was applied
    assert _err(h, "put", {"key": b"a/mine", "value": b"v", U: ""}) == "USER_EMPTY"
    h.one("auth_disable", {U: "root"})
    h.one("put", {"key": b"secret", "value": b"v", U: ""})


def test_a_permission_revoked_before_a_write_in_the_log_denies_it(h):
    _setup(h)
    write = ("put", {"key": b"a/mine", "value": b"v", U: "alice"})
    revoke = ("role_revoke_permission", {"role": "reader", "key": b"a/mine", U: "root"})
    out = h.apply([write, revoke, write])
    assert not isinstance(out[0], RaftkvError) and not isinstance(out[1], RaftkvError)
    assert out[2].code == "PERMISSION_DENIED"


def test_leases_are_checked_by_their_keys_and_internal_revokes_are_not(h):
    _setup(h)
    lid = h.one("lease_grant", {"TTL": 60, U: "alice"})["ID"]
    h.one("put", {"key": b"a/x", "value": b"v", "lease": lid, U: "root"})
    assert _err(h, "put", {"key": b"a/mine", "value": b"v", "lease": lid, U: "alice"}) == \
        "PERMISSION_DENIED"  # the lease holds a/x, which alice may not write
    assert _err(h, "lease_revoke", {"ID": lid, U: "alice"}) == "PERMISSION_DENIED"
    h.one("lease_revoke", {"ID": lid})  # the leader's expiry: no user field, not checked
    assert h.get(b"a/x")["kvs"] == []


def test_tokens_expire_and_die_with_their_user(h):
    now = [100.0]
    _setup(h)
    h.store.auth._clock = lambda: now[0]
    h.one(auth.TOKEN_OP, {"name": "alice", "token": "t1"})
    h.one(auth.TOKEN_OP, {"name": "alice", "token": "t2"})
    assert h.store.auth.user_of_token("t1") == "alice"
    now[0] += h.store.auth.token_ttl_s - 1
    assert h.store.auth.user_of_token("t1") == "alice"  # a use renews it
    now[0] += 2
    assert h.store.auth.user_of_token("t1") == "alice"
    with pytest.raises(RaftkvError) as info:
        h.store.auth.user_of_token("t2")  # idle for longer than the TTL
    assert info.value.code == "INVALID_AUTH_TOKEN"
    h.one("user_change_password", {"name": "alice", "password": ROOT_HASH, U: "root"})
    with pytest.raises(RaftkvError):
        h.store.auth.user_of_token("t1")
    assert _err(h, auth.TOKEN_OP, {"name": "ghost", "token": "t3"}) == "AUTH_FAILED"
    h.one("auth_disable", {U: "root"})
    assert _err(h, auth.TOKEN_OP, {"name": "alice", "token": "t4"}) == "AUTH_NOT_ENABLED"


def test_passwords(h):
    _setup(h, enable=False)
    store = h.store.auth
    store.check_password("root", "rootpw")
    store.check_password("root", "rootpw")  # remembered: no second hash
    for name, password in [("root", "rootpw "), ("root", ""), ("ghost", "x")]:
        with pytest.raises(RaftkvError) as info:
            store.check_password(name, password)
        assert info.value.code == "AUTH_FAILED"
    h.one("user_add", {"name": "cn", "no_password": True})
    with pytest.raises(RaftkvError):
        store.check_password("cn", "")
    stored = auth.hash_password("s3cret", cost=4)
    assert stored.startswith("$2b$04$") and "s3cret" not in stored  # bcrypt, as etcd's
    assert auth.verify_password("s3cret", stored) and not auth.verify_password("s3cre", stored)
    # etcd's own hash of "alicepw" (Go's bcrypt, cost 10, from an etcd 3.4 snapshot)
    etcd_hash = "$2a$10$5wqpTTKlQNuKdKVB2hO9QOOIFebTJ9tQBm/M67f.MyYkRhvhYKFoW"
    assert auth.verify_password("alicepw", etcd_hash)
    assert not auth.verify_password("alicepw ", etcd_hash)
    assert not auth.verify_password("alicepw", etcd_hash[:-1])
    long_pw = "p" * 100  # beyond bcrypt's 72 bytes: PBKDF2, which uses all of it
    stored = auth.hash_password(long_pw, cost=4)
    assert stored.startswith("pbkdf2_sha256$3200$")
    assert auth.verify_password(long_pw, stored) and not auth.verify_password(long_pw[:-1],
                                                                               stored)
    legacy = auth.hash_password("s3cret", cost=4, salt=b"0" * 16)  # raftkv's hashes before
    assert legacy.startswith("pbkdf2_sha256$3200$") and auth.verify_password("s3cret", legacy)
    assert not auth.verify_password("x", "md5$1$aa$bb") and not auth.verify_password("x", None)


def test_state_survives_reopen_and_travels_in_snapshots(tmp_path):
    src = Harness(tmp_path / "src")
    _setup(src)
    snapshot = list(src.store.snapshot(chunk_bytes=256))
    store = src.reopen()
    assert store.auth.status() == {"enabled": True, "authRevision": 9}
    assert store.auth.user_list() == ["alice", "root"]
    assert store.auth.role_permissions("reader")[0]["key"] == b"a/"
    dst = Harness(tmp_path / "dst")
    dst.store.restore(snapshot)
    assert dst.store.auth.enabled and dst.store.auth.user_roles("alice") == ["reader"]
    with pytest.raises(RaftkvError):
        dst.store.auth.check_read("alice", b"b", b"")
    src.close()
    dst.close()


def test_shapes_are_checked(h):
    bad = [("user_add", {"name": 5}), ("role_grant_permission", {"name": "r", "perm": 1}),
           ("role_grant_permission", {"name": "r", "perm": {"permType": 3}}),
           ("role_grant_permission", {"name": "r", "perm": {"key": "k"}}),
           ("role_revoke_permission", {"role": "r", "range_end": 1}),
           ("user_add", {"name": "u", "no_password": "yes"})]
    for op, body in bad:
        assert _err(h, op, body) == "BAD_REQUEST"


KEYS = st.binary(max_size=3)


@settings(max_examples=300, deadline=None)
@given(grants=st.lists(st.tuples(KEYS, st.one_of(st.just(b""), st.just(b"\0"), KEYS)),
                       max_size=5),
       key=KEYS, end=st.one_of(st.just(b""), st.just(b"\0"), KEYS), probe=KEYS)
def test_covers_agrees_with_key_by_key_membership(grants, key, end, probe):
    """Coverage of merged intervals equals "every key of the request is in some grant",
    checked on the request's own keys and on a probe key (keys of up to 3 bytes). A grant with
    an empty key or an empty or backwards range holds no key; a backwards or empty request
    range needs its start key (etcd 3.4's interval tree)."""
    ivls = [i for i in (auth.perm_interval(k, e) for k, e in grants) if i is not None]
    merged = auth.merge(ivls)

    def granted(k):
        return any(_inside(k, *ivl) for ivl in ivls)

    start, stop = auth.interval(key, end)
    if stop is not None and stop <= start:
        assert auth.covers(merged, key, end) == granted(start)
        return
    if auth.covers(merged, key, end):
        assert granted(start)
        if _inside(probe, start, stop):
            assert granted(probe)
    elif not end:
        assert not granted(key)


def _inside(k, start, stop):
    return start <= k and (stop is None or k < stop)


def _pem_pair(kind="rsa"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else \
        ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


@pytest.mark.parametrize("method,kind", [("RS256", "rsa"), ("ES256", "ec"), ("HS256", None)])
def test_jwt_tokens_sign_and_check(method, kind):
    now = [1_000_000.0]
    priv, pub = _pem_pair(kind) if kind else (b"a shared secret of enough bytes!", None)
    tokens = auth.JwtTokens(method, priv, pub, ttl_s=60, clock=lambda: now[0])
    token = tokens.sign("alice", 7)
    assert tokens.check(token, 7) == "alice"
    bad = [token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"),  # signature
           "not.a.token"]
    if kind:
        other = auth.JwtTokens(method, *_pem_pair(kind), ttl_s=60, clock=lambda: now[0])
        bad.append(other.sign("alice", 7))  # another member's key
    for t in bad:
        with pytest.raises(RaftkvError) as info:
            tokens.check(t, 7)
        assert info.value.code == "INVALID_AUTH_TOKEN"
    with pytest.raises(RaftkvError):
        tokens.check(token, 8)  # the auth state changed since it was signed
    now[0] += 120  # two minutes later: past its 60 s
    with pytest.raises(RaftkvError):
        tokens.check(token, 7)


def test_jwt_keys_must_fit_the_method():
    priv, pub = _pem_pair("rsa")
    for args in [("RS256", priv, None), ("ES256", priv, pub), ("XX1", priv, pub)]:
        with pytest.raises(Exception):
            auth.JwtTokens(*args)


def test_jwt_store_checks_the_user_still_exists(tmp_path):
    priv, pub = _pem_pair("rsa")
    h = Harness(tmp_path / "d", auth_jwt=auth.JwtTokens("RS256", priv, pub))
    _setup(h)
    token = h.store.auth.jwt.sign("alice", h.store.auth.revision)
    assert h.store.auth.user_of_token(token) == "alice"
    h.one("user_delete", {"name": "alice", U: "root"})
    with pytest.raises(RaftkvError):  # older than the auth state, and the user is gone
        h.store.auth.user_of_token(token)
    h.close()
