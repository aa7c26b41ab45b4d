"""Auth on a real 3-member cluster through the native protocol (raftkv.Client): users, roles
and permissions set up with the client's admin calls; enforcement on reads, writes, bulk
loads, watches and transactions; tokens known to every member; a restart of every member
keeps the auth state but not the tokens, and the clients authenticate again by themselves;
lease expiry still works with auth on. etcdctl's view of the same: tests/etcdctl/test_auth.py
and the conformance run."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire
from raftkv.client import Client

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

def _client(h, members=None, **kw):
    members = h.members if members is None else members
    c = Client([m.native_endpoint for m in members], timeout=10.0, **kw)
    h._clients.append(c)  # closed at teardown with the harness's own
    return c


def _code(fn, *args, **kw):
    with pytest.raises(wire.RaftkvError) as info:
        fn(*args, **kw)
    return info.value.code


def _setup(h):
    admin = _client(h)
    admin.user_add("root", "rootpw")
    admin.user_grant_role("root", "root")
    admin.user_add("alice", "alicepw")
    admin.role_add("app")
    admin.role_grant_permission("app", "readwrite", "/app/", prefix=True)
    admin.role_grant_permission("app", "read", "/shared/", prefix=True)
    admin.user_grant_role("alice", "app")
    admin.put("/shared/config", "v1")
    admin.put("/secret/k", "s")
    admin.auth_enable()
    return admin


def test_permissions_are_enforced_on_every_kind_of_request(make_cluster):
    h = make_cluster(3)
    anonymous = _setup(h)
    assert _code(anonymous.put, "/app/x", "v") == "USER_EMPTY"
    assert _code(anonymous.get, "/shared/config") == "USER_EMPTY"
    # Only the service sets the user field a write carries into the log.
    assert _code(anonymous.call, "put", {"key": b"/secret/k", "value": b"x", "_auth": "root"},
                 authenticated=False) == "USER_EMPTY"
    assert _code(anonymous.call, "put", {"key": b"/secret/k", "value": b"x",
                                         "_cert_user": "root"}, authenticated=False) == \
        "USER_EMPTY"  # nor the certificate's name (the native front end sets it from TLS)
    bad = _client(h, user="alice", password="wrong")
    assert _code(bad.get, "/app/x") == "AUTH_FAILED"

    alice = _client(h, user="alice", password="alicepw")
    root = _client(h, user="root", password="rootpw")
    alice.put("/app/x", "1")
    assert alice.get("/shared/config")[0] == b"v1"
    assert _code(alice.put, "/shared/config", "mine") == "PERMISSION_DENIED"
    assert _code(alice.get, "/secret/k") == "PERMISSION_DENIED"
    assert _code(alice.get_prefix, "/") == "PERMISSION_DENIED"
    assert [m.key for _, m in alice.get_prefix("/app/")] == [b"/app/x"]
    assert _code(alice.delete_prefix, "/shared/") == "PERMISSION_DENIED"
    assert _code(alice.user_list) == "PERMISSION_DENIED"
    assert _code(alice.role_add, "mine") == "PERMISSION_DENIED"
    assert alice.user_get("alice") == ["app"]  # a user may read itself
    ok, _ = alice.transaction(compare=[alice.transactions.value("/shared/config") == "v1"],
                              success=[alice.transactions.put("/app/t", "yes")])
    assert ok and alice.get("/app/t")[0] == b"yes"
    assert _code(alice.transaction, compare=[],
                 success=[alice.transactions.put("/secret/k", "x")]) == "PERMISSION_DENIED"
    # A bulk load: the pairs alice may not write fail one by one, the rest is stored.
    result = alice.put_many([("/app/bulk/%03d" % i, "v") for i in range(50)] +
                            [("/secret/bulk", "v")])
    assert (result.done, result.failed) == (50, 1)
    assert "permission denied" in result.errors[0]
    assert root.get("/secret/bulk") == (None, None)
    assert len(root.get_prefix("/app/bulk/")) == 50
    # Watches: checked when created; a permitted one delivers events.
    events, cancel = alice.watch_prefix("/app/w/")
    root.put("/app/w/1", "e")
    assert next(iter(events)).key == b"/app/w/1"
    cancel()
    denied, cancel = alice.watch("/secret/k")
    assert _code(next, iter(denied)) == "PERMISSION_DENIED"
    assert root.get("/secret/k")[0] == b"s"
    assert root.auth_status()["enabled"]
    # A revoked permission holds for the very next request.
    root.role_revoke_permission("app", "/app/", prefix=True)
    assert _code(alice.put, "/app/x", "2") == "PERMISSION_DENIED"


def test_tokens_work_on_every_member_and_restarts_reauthenticate(make_cluster):
    h = make_cluster(3)
    _setup(h)
    leader = h.leader()
    followers = [m for m in h.members if m is not leader]
    alice = _client(h, [followers[0]], user="alice", password="alicepw", prefer_leader=False)
    alice.put("/app/a", "1")  # authenticated on a follower, which forwards the write
    token = alice.with_token({})["token"]
    for m in h.members:  # the token went through the log: every member knows it
        raw = _client(h, [m], prefer_leader=False)
        resp = raw.call("range", {"key": b"/app/a", "token": token}, authenticated=False)
        assert resp["kvs"][0]["value"] == b"1"
        assert _code(raw.call, "range", {"key": b"/secret/k", "token": token},
                     authenticated=False) == "PERMISSION_DENIED"
        assert _code(raw.call, "range", {"key": b"/app/a", "token": "forged.1"},
                     authenticated=False) == "INVALID_AUTH_TOKEN"
    h.restart_all()
    # The auth state is durable; the tokens were not: the client authenticates again.
    deadline = time.monotonic() + 20
    while True:
        try:
            assert alice.get("/app/a")[0] == b"1"
            break
        except (wire.RaftkvError, ConnectionError) as exc:
            if getattr(exc, "code", "") == "INVALID_AUTH_TOKEN" or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert alice.with_token({})["token"] != token
    assert _code(alice.get, "/secret/k") == "PERMISSION_DENIED"
    anonymous = _client(h)
    assert _code(anonymous.put, "/app/x", "v") == "USER_EMPTY"


def test_leases_expire_with_auth_on(make_cluster):
    """The leader's expiry revokes carry no user: they are not refused (a user's revoke is
    checked against the lease's keys)."""
    h = make_cluster(3)
    _setup(h)
    root = _client(h, user="root", password="rootpw")
    alice = _client(h, user="alice", password="alicepw")
    lease = root.lease(2)
    root.put("/secret/leased", "v", lease=lease)
    assert _code(alice.revoke_lease, lease.id) == "PERMISSION_DENIED"
    deadline = time.monotonic() + 20
    while root.get("/secret/leased") != (None, None):
        assert time.monotonic() < deadline, "the leased key outlived its lease"
        time.sleep(0.2)


def test_jwt_tokens_outlive_restarts_and_end_with_an_auth_change(make_cluster, tmp_path):
    """--auth-token jwt: the member asked signs the token, every member checks it with the
    public key, and a restart of every member does not end it; a change of the auth state
    does, and the client authenticates again by itself."""
    from tests.unit.mvcc.test_auth import _pem_pair

    priv, pub = _pem_pair("ec")
    (tmp_path / "jwt.pem").write_bytes(priv)
    (tmp_path / "jwt.pub").write_bytes(pub)
    spec = f"jwt,pub-key={tmp_path / 'jwt.pub'},priv-key={tmp_path / 'jwt.pem'}," \
           "sign-method=ES256,ttl=10m"
    h = make_cluster(3, extra_args=["--auth-token", spec])
    _setup(h)
    alice = _client(h, user="alice", password="alicepw")
    alice.put("/app/j", "1")
    token = alice.with_token({})["token"]
    assert token.count(".") == 2  # header.claims.signature

    def read_with(token, m):
        raw = _client(h, [m], prefer_leader=False)
        return raw.call("range", {"key": b"/app/j", "token": token},
                        authenticated=False)["kvs"][0]["value"]

    assert all(read_with(token, m) == b"1" for m in h.members)
    h.restart_all()
    assert all(read_with(token, m) == b"1" for m in h.members)  # still valid
    root = _client(h, user="root", password="rootpw")
    root.role_add("another")  # the auth revision moves on: older tokens end
    with pytest.raises(wire.RaftkvError) as info:
        read_with(token, h.members[0])
    assert info.value.code == "INVALID_AUTH_TOKEN"
    assert alice.get("/app/j")[0] == b"1"  # authenticated again by itself
    assert alice.with_token({})["token"] != token


def test_a_verify_only_member_checks_tokens_others_signed(make_cluster, tmp_path):
    """etcd's verify-only member (--auth-token jwt with pub-key alone) serves requests with
    tokens the other members signed, and refuses to sign one itself."""
    from tests.unit.mvcc.test_auth import _pem_pair

    priv, pub = _pem_pair("ec")
    (tmp_path / "jwt.pem").write_bytes(priv)
    (tmp_path / "jwt.pub").write_bytes(pub)
    keys = f"jwt,pub-key={tmp_path / 'jwt.pub'},sign-method=ES256"
    h = make_cluster(3, extra_args=["--auth-token", f"{keys},priv-key={tmp_path / 'jwt.pem'}"])
    checker = h.members[2]
    assert h.stop_member(checker) == 0
    h.cluster.member_args[checker.name] = ["--auth-token", keys]
    h.start_member(checker)
    _setup(h)
    signer = _client(h, h.members[:1], user="alice", password="alicepw", prefer_leader=False)
    signer.put("/app/v", "1")
    token = signer.with_token({})["token"]
    raw = _client(h, [checker], prefer_leader=False)
    resp = raw.call("range", {"key": b"/app/v", "token": token}, authenticated=False)
    assert resp["kvs"][0]["value"] == b"1"
    with pytest.raises(wire.RaftkvError) as info:
        raw.call("authenticate", {"name": "alice", "password": "alicepw"},
                 authenticated=False)
    assert (info.value.code, str(info.value)) == \
        ("AUTH_VERIFY_ONLY", "auth: token signing attempted with verify-only key")


def test_a_client_with_a_user_works_before_and_after_auth_is_turned_on(make_cluster):
    """As etcd's clients: with auth off, a client given a user and password carries on
    without a token ("authentication is not enabled" is not an error); once auth is on, it
    authenticates at the first refusal and goes on."""
    h = make_cluster(3)
    alice = _client(h, user="alice", password="alicepw")
    alice.put("/app/early", "1")  # no users yet, auth off
    _setup(h)
    alice.put("/app/later", "2")
    assert alice.get("/app/early")[0] == b"1"
    assert _code(alice.get, "/secret/k") == "PERMISSION_DENIED"


def test_lease_grants_and_compactions_need_no_user(make_cluster):
    """As etcd 3.4: with auth on, a lease grant or a compaction without a user is let
    through, a put is not."""
    h = make_cluster(3)
    anonymous = _setup(h)
    lease = anonymous.lease(30)
    assert lease.id
    anonymous.compact(2)
    assert _code(anonymous.put, "/app/x", "v") == "USER_EMPTY"
    assert _code(anonymous.delete, "/app/x") == "USER_EMPTY"


def test_request_checks_tokens_and_users_in_etcds_order(make_cluster):
    """As etcd 3.4.23 (tests/etcdctl/differential_auth.py): a request's own checks come before
    its token and user; a txn with nothing to check needs no user; UserGet of "" with no
    token is "user name not found"; a token is refused after AuthDisable."""
    h = make_cluster(3)
    anonymous = _setup(h)
    assert _code(anonymous.call, "put", {"key": b"k", "value": b"v", "ignore_value": True},
                 authenticated=False) == "VALUE_PROVIDED"
    assert _code(anonymous.call, "range", {"key": b"", "token": "bogus.1"},
                 authenticated=False) == "EMPTY_KEY"
    assert anonymous.call("txn", {}, authenticated=False)["succeeded"]
    assert _code(anonymous.call, "txn", {"success": [{"request_range": {"key": b"/app/x"}}]},
                 authenticated=False) == "USER_EMPTY"
    assert _code(anonymous.call, "user_get", {"name": ""}, authenticated=False) == \
        "USER_NOT_FOUND"
    token = anonymous.call("authenticate", {"name": "root", "password": "rootpw"},
                           authenticated=False)["token"]
    anonymous.call("auth_disable", {"token": token}, authenticated=False)
    assert _code(anonymous.call, "range", {"key": b"/app/x", "token": token},
                 authenticated=False) == "INVALID_AUTH_TOKEN"
    anonymous.call("range", {"key": b"/app/x"}, authenticated=False)


class _LaggingMember:
    """A 3-member cluster with auth set up (_setup), whose follower `lagging` can be cut off
    (partition failpoint) while the leader commits changes."""

    def __init__(self, make_cluster, tmp_path, monkeypatch):
        from tests.cluster import histories
        self._histories = histories
        self.fp_dir = tmp_path / "failpoints"
        self.fp_dir.mkdir()
        monkeypatch.setenv("RAFTKV_FAILPOINT_DIR", str(self.fp_dir))
        self.h = h = make_cluster(3)
        _setup(h)
        self.leader = h.leader()
        self.lagging = next(m for m in h.members if m is not self.leader)
        self.ids = {m.name: h.status(m)["header"]["member_id"] for m in h.members}
        self.root = _client(h, [self.leader], user="root", password="rootpw")

    def _cut(self, cut):
        self._histories.write_partition(str(self.fp_dir), list(self.ids), cut)

    def read_while_cut_off(self, change, read):
        """Cut the lagging member off, run change() (committed by the other two), start
        read() (a request to the lagging member), heal after 1 s. Returns (whether the read
        was answered before the heal, its result or None, its error code or None)."""
        from concurrent.futures import ThreadPoolExecutor
        self._cut(self._histories.isolation(self.ids, self.lagging.name))
        try:
            time.sleep(0.5)  # the failpoint file is polled
            change()
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(read)
                time.sleep(1.0)
                arrived_early = pending.done()
                self._cut({})
                try:
                    return arrived_early, pending.result(timeout=30), None
                except wire.RaftkvError as exc:
                    return arrived_early, None, exc.code
        finally:
            self._cut({})


def test_a_lagging_member_checks_reads_against_the_permissions_it_catches_up_to(
        make_cluster, tmp_path, monkeypatch):
    """A linearizable read sent to a member that has not yet applied a grant or a revoke is
    checked once its read barrier passed, as etcd checks after its ReadIndex: the member is cut
    off (partition failpoint) while the leader commits the change, the read goes to it, and
    the cut is healed. A grant must let the read through, a revoke must stop it (the member
    checked on arrival before: it denied the first and served the second)."""
    lm = _LaggingMember(make_cluster, tmp_path, monkeypatch)
    lm.root.put("/lag/k", "v")
    alice = _client(lm.h, [lm.lagging], user="alice", password="alicepw")
    assert _code(alice.get, "/lag/k") == "PERMISSION_DENIED"  # authenticated on the lagging one
    early, value, code = lm.read_while_cut_off(
        lambda: lm.root.role_grant_permission("app", "read", "/lag/", prefix=True),
        lambda: alice.get("/lag/k"))
    assert (early, code) == (False, None), "the grant was not seen"
    assert value is not None and value[0] == b"v"
    early, value, code = lm.read_while_cut_off(
        lambda: lm.root.role_revoke_permission("app", "/lag/", prefix=True),
        lambda: alice.get("/lag/k"))
    assert (early, value, code) == (False, None, "PERMISSION_DENIED")


def test_a_token_from_another_member_works_on_a_lagging_one_for_reads(
        make_cluster, tmp_path, monkeypatch):
    """A token issued by the leader (through the log) while a follower is cut off is good for
    a range and an auth read on that follower: both resolve it after their barrier (before,
    the follower refused it as invalid on arrival)."""
    lm = _LaggingMember(make_cluster, tmp_path, monkeypatch)
    at_leader = _client(lm.h, [lm.leader])
    at_lagging = _client(lm.h, [lm.lagging])
    tokens = []

    def authenticate():
        tokens.append(at_leader.call("authenticate", {"name": "alice",
                                                      "password": "alicepw"})["token"])

    early, resp, code = lm.read_while_cut_off(authenticate, lambda: at_lagging.call(
        "range", {"key": b"/shared/config", "token": tokens[0]}, authenticated=False))
    assert (early, code) == (False, None)
    assert [kv["value"] for kv in resp["kvs"]] == [b"v1"]
    early, resp, code = lm.read_while_cut_off(authenticate, lambda: at_lagging.call(
        "role_get", {"role": "app", "token": tokens[1]}, authenticated=False))
    assert (early, code) == (False, None)
    assert len(resp["perm"]) == 2


def test_lease_time_to_live_names_keys_only_to_users_who_may_read_them(make_cluster):
    """etcd 3.4.26's fix of CVE-2023-32082: with keys requested and auth on, a time-to-live
    answers only a user who may read every key on the lease (3.4.23 lists them to anyone).
    Without keys, or as root, it answers as before; with keys and no user, "user name is
    empty" even for a lease without keys."""
    h = make_cluster(3)
    _setup(h)
    root = _client(h, user="root", password="rootpw")
    alice = _client(h, user="alice", password="alicepw")
    anonymous = _client(h)
    mixed, own, empty = root.lease(600), root.lease(600), root.lease(600)
    root.put("/app/a", "1", lease=mixed)
    root.put("/secret/b", "2", lease=mixed)
    root.put("/app/c", "3", lease=own)

    def ttl(client, lease, keys=True):
        return client.call("lease_timetolive", {"ID": lease.id, "keys": keys})

    assert _code(ttl, alice, mixed) == "PERMISSION_DENIED"
    assert ttl(alice, mixed, keys=False)["grantedTTL"] == 600
    assert sorted(ttl(root, mixed)["keys"]) == [b"/app/a", b"/secret/b"]
    assert ttl(alice, own)["keys"] == [b"/app/c"]
    assert ttl(alice, empty)["keys"] == []
    assert _code(ttl, anonymous, empty) == "USER_EMPTY"
    assert ttl(anonymous, empty, keys=False)["grantedTTL"] == 600
