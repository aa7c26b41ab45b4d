"""etcd v3's auth store (users, roles, key permissions), part of the replicated state.

State, in sub-db "auth" (so Raft snapshots carry it): the enabled flag, the auth revision
(bumped by every change), users (name -> {"password": hash or None, "roles": sorted names,
"no_password": bool}) and roles (name -> permissions [perm_type, key, range_end] sorted by key
in etcd's order, see _sort_as_etcd).
Every change is a log op that every member applies in log order (KVStore registers OPS). A
password is hashed by the member that took the request, before proposing, so the log never
holds a password and apply stays deterministic.

Tokens are etcd's `--auth-token simple`: Authenticate checks the password on the member the
client asked, then proposes `auth_assign_token`; every member keeps the token in memory for
token_ttl_s after its last use. Tokens are not persisted: after a restart clients authenticate
again, as with etcd.

Checks, as etcd's: reads (range, watch) are checked by the member that serves them, with its
current state. Writes are checked in apply (check_write) against the state at their place in the
log, so every member gives the same verdict and no write passes on a permission revoked before
it. A client's write carries its user in the internal field USER_FIELD (the service sets it,
replacing whatever the client sent); ops the members propose themselves (lease expiry, member
attributes, alarms) carry none and are not checked. The user of the `root` role may do anything;
auth management and membership changes need it.

JWT tokens (`--auth-token jwt,...`, JwtTokens) are signed by the member the client asked, with
no proposal, and checked by any member holding the public key: they survive restarts. A token
names its user and the auth revision it was signed at; one signed before the latest change of
the auth state is refused, so the client authenticates again (etcd refuses it as "revision of
auth store is old", which its clients also answer by authenticating again).

Passwords: bcrypt hashes of cost --bcrypt-cost, as etcd's, so that snapshots carry users
between raftkv and etcd both ways (raftkv.mvcc.snapshot). A password longer than bcrypt's 72
bytes gets PBKDF2-HMAC-SHA256 (200 x 2**cost iterations), as did every password before raftkv
used bcrypt; both kinds are checked. A password that was verified once is remembered (an HMAC
of it under a per-process key) until the user's hash changes, so repeated Authenticate calls do
not pay the hash again: etcd's bcrypt on every Authenticate has been a CPU hotspot.
"""
from __future__ import annotations

import base64
import bisect
import collections
import hashlib
import hmac
import os
import secrets
import threading
import time

import msgpack

from raftkv.errors import RaftkvError

AUTH_DB = "auth"
ROOT = "root"
READ, WRITE, READWRITE = 0, 1, 2
PERM_TYPES = (READ, WRITE, READWRITE)
USER_FIELD = "_auth"  # a client write's user, set by the service (internal ops: absent)
# The CN of the client's verified TLS certificate, set by the front ends (replacing anything a
# client sent); with --client-cert-auth it names the user of a request that has no token.
CERT_USER_FIELD = "_cert_user"
TOKEN_TTL_DEFAULT_S = 300.0  # etcd --auth-token-ttl
HASH_COST_DEFAULT = 10  # etcd --bcrypt-cost
HASH_COST_MIN, HASH_COST_MAX = 4, 16
_ITERATIONS_UNIT = 200
_SCHEME = "pbkdf2_sha256"
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")  # etcd's hashes (golang.org/x/crypto/bcrypt)
_BCRYPT_MAX_BYTES = 72  # bcrypt uses no more of a password
_VERIFIED_MAX = 1024  # remembered (user, password) verifications
_TOKEN_SWEEP_EVERY = 256  # token assignments between sweeps of expired tokens
_ENABLED, _REVISION = b"enabled", b"revision"
_USER, _ROLE = b"user/", b"role/"
_KEY_OPS = frozenset({"put", "delete_range", "txn", "puts", "lease_revoke"})  # key checks
_TXN_OPS = {"request_range": "range", "request_put": "put",
            "request_delete_range": "delete_range", "request_txn": "txn"}

# Auth management ops (all replicated, all for root once auth is enabled) and the token op.
ADMIN_OPS = frozenset({"auth_enable", "auth_disable", "user_add", "user_delete",
                       "user_change_password", "user_grant_role", "user_revoke_role",
                       "role_add", "role_delete", "role_grant_permission",
                       "role_revoke_permission"})
TOKEN_OP = "auth_assign_token"
# Reads of the auth state (the service answers them itself), and all the ops the service
# handles, besides the log ops above, with the token assignment it proposes.
READ_OPS = frozenset({"auth_status", "user_get", "user_list", "role_get", "role_list"})
FRONT_END_OPS = READ_OPS | {"authenticate", TOKEN_OP}


JWT_METHODS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
               "HS256", "HS384", "HS512")
JWT_TTL_DEFAULT_S = 300.0  # etcd's jwt ttl default (5m)


class JwtTokens:
    """Signs and checks JWT tokens (PyJWT). Asymmetric methods sign with priv_key and check
    with pub_key (PEM bytes); HS* use priv_key's bytes as the shared secret. Without priv_key
    (an asymmetric method) the member only checks tokens, as etcd's verify-only members: sign
    raises AUTH_VERIFY_ONLY."""

    def __init__(self, sign_method, priv_key, pub_key=None, ttl_s=JWT_TTL_DEFAULT_S,
                 clock=time.time):
        import jwt  # PyJWT: only a member started with --auth-token jwt needs it

        if sign_method not in JWT_METHODS:
            raise ValueError(f"sign-method {sign_method!r} is not one of "
                             f"{', '.join(JWT_METHODS)}")
        self._jwt = jwt
        self.method = sign_method
        self.ttl_s = ttl_s
        self._clock = clock
        self._sign_key = priv_key
        self._check_key = priv_key if sign_method.startswith("HS") else pub_key
        if self._check_key is None:
            raise ValueError(f"sign-method {sign_method} needs "
                             f"{'priv-key' if sign_method.startswith('HS') else 'pub-key'}")
        if priv_key is not None:
            # Sign and check once now, so a key that does not fit the method stops the start.
            self.check(self.sign("probe", 0), 0)
        else:  # verify-only: a public key that does not load stops the start
            self._jwt.algorithms.get_default_algorithms()[sign_method].prepare_key(pub_key)

    @property
    def verify_only(self):
        return self._sign_key is None

    def sign(self, user, revision):
        if self._sign_key is None:
            raise RaftkvError("AUTH_VERIFY_ONLY")
        claims = {"username": user, "revision": revision,
                  "exp": int(self._clock() + self.ttl_s)}
        return self._jwt.encode(claims, self._sign_key, algorithm=self.method)

    def check(self, token, revision):
        """The token's user; INVALID_AUTH_TOKEN if the signature, expiry or shape is wrong,
        or it was signed before auth revision `revision`."""
        try:
            # expiry checked below, on this object's clock
            claims = self._jwt.decode(token, self._check_key, algorithms=[self.method],
                                      options={"require": ["exp", "username", "revision"],
                                               "verify_exp": False})
        except self._jwt.PyJWTError:
            raise RaftkvError("INVALID_AUTH_TOKEN") from None
        user, signed_at, exp = claims["username"], claims["revision"], claims["exp"]
        if not isinstance(user, str) or not isinstance(signed_at, int) or \
                not isinstance(exp, (int, float)) or signed_at < revision or \
                exp <= self._clock():
            raise RaftkvError("INVALID_AUTH_TOKEN")
        return user


def hash_password(password, cost=HASH_COST_DEFAULT, salt=None):
    """The stored form of password: a bcrypt hash of that cost, as etcd stores ("$2b$10$..."),
    so snapshots carry users between raftkv and etcd; a password longer than bcrypt's 72
    bytes (or a given salt) gets PBKDF2, "pbkdf2_sha256$iterations$salt$digest" (base64)."""
    raw = password.encode()
    if salt is None and len(raw) <= _BCRYPT_MAX_BYTES:
        import bcrypt

        return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=cost)).decode("ascii")
    iterations = _ITERATIONS_UNIT << cost
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join((_SCHEME, str(iterations), _b64(salt), _b64(digest)))


def verify_password(password, stored):
    if isinstance(stored, str) and stored.startswith(_BCRYPT_PREFIXES):
        return _verify_bcrypt(password, stored)
    try:
        scheme, iterations, salt, digest = stored.split("$")
        iterations = int(iterations)
        salt, digest = base64.b64decode(salt), base64.b64decode(digest)
    except (AttributeError, ValueError):
        return False
    if scheme != _SCHEME or not 0 < iterations <= _ITERATIONS_UNIT << HASH_COST_MAX:
        return False
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(got, digest)


def _verify_bcrypt(password, stored):
    """A bcrypt hash ("$2a$10$..."): hash_password's, or etcd's in a restored snapshot."""
    import bcrypt

    raw = password.encode()
    if len(raw) > _BCRYPT_MAX_BYTES:
        return False  # hash_password gives such passwords PBKDF2 hashes
    try:
        return bcrypt.checkpw(raw, stored.encode("ascii"))
    except ValueError:
        return False


def read_state(txn, db):
    """The committed auth state in the auth sub-db: {"enabled", "revision", "users", "roles"}
    (users {name: record}, roles {name: [(perm type, key, range end)]}, by name) and
    "enabled_set": whether auth was ever enabled or disabled (the flag is stored)."""
    users, roles = {}, {}
    for key, raw in txn.cursor(db=db):
        if key.startswith(_USER):
            users[key[len(_USER):].decode()] = _unpackb(raw)
        elif key.startswith(_ROLE):
            roles[key[len(_ROLE):].decode()] = [tuple(p) for p in _unpackb(raw)]
    raw = txn.get(_REVISION, db=db)
    flag = txn.get(_ENABLED, db=db)
    return {"enabled": flag == b"\x01", "enabled_set": flag is not None,
            "revision": int.from_bytes(raw, "big") if raw else 0, "users": users,
            "roles": roles}


def import_records(txn, db, enabled, revision, users, roles):
    """Write an imported auth state (an etcd snapshot's, see snapshot.import_bbolt) into the
    empty auth sub-db: users {name: {"password": hash or None, "roles": names, "no_password":
    bool}} and roles {name: [(perm type, key, range end)]}, in the records AuthStore.load
    reads."""
    assert txn.stat(db)["entries"] == 0, "import_records writes into an empty auth sub-db"
    for name, rec in users.items():
        txn.put(_USER + name.encode(), _packb(dict(rec, roles=sorted(rec["roles"]))), db=db)
    for name, perms in roles.items():
        perms = sorted((tuple(p) for p in perms), key=lambda p: p[1])  # keeps etcd's order
        txn.put(_ROLE + name.encode(), _packb(perms), db=db)
    txn.put(_REVISION, int(revision).to_bytes(8, "big"), db=db)
    if enabled:
        txn.put(_ENABLED, b"\x01", db=db)


def _sort_as_etcd(perms):
    """Sort a role's permissions in place by key alone, as etcd 3.4's sort.Sort(permSlice):
    up to 12 of them Go insertion-sorts, which keeps equal keys in the order they were
    granted, as this stable sort does. Go's pdqsort for longer lists does not promise that
    order for equal keys (docs/ETCD_DIFFERENCES.md)."""
    perms.sort(key=lambda p: p[1])


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _packb(obj):
    return msgpack.packb(obj, use_bin_type=True)


def _unpackb(raw):
    return msgpack.unpackb(raw, raw=False)


def interval(key, range_end):
    """[start, end) of a key (range_end empty) or a range; end None: to the end of keys."""
    if not range_end:
        return key, key + b"\0"
    if range_end == b"\0":
        return key, None
    return key, range_end


def perm_interval(key, range_end):
    """[start, end) of a granted permission as etcd 3.4 reads it (range_perm_cache.go, with
    adt.BytesAffineComparable: an empty byte string sorts above every other), or None for a
    permission that holds no key: one with an empty key (it starts past every key, so
    ("", "\0") grants nothing, where etcdctl sends "\0" for all keys), or a range that ends
    at or before its start."""
    if not key:
        return None
    start, end = interval(key, range_end)
    if end is not None and end <= start:
        return None
    return start, end


def merge(intervals):
    """Sorted, disjoint, non-adjacent intervals covering the same keys."""
    out = []
    for start, end in sorted(intervals, key=lambda i: i[0]):
        if out and (out[-1][1] is None or start <= out[-1][1]):
            last = out[-1]
            if last[1] is not None and (end is None or end > last[1]):
                out[-1] = (last[0], end)
            continue
        out.append((start, end))
    return out


def covers(merged, key, range_end):
    """True when the merged intervals hold every key of the request's key or range. A
    backwards or empty range [start, end) (end <= start, which reads or deletes nothing) needs
    its start key granted, as etcd's IntervalTree.Contains decides: it looks at the grants
    overlapping the range, which for such a range are those holding start."""
    start, end = interval(key, range_end)
    if end is not None and end <= start:
        end = start + b"\0"
    for s, e in merged:
        if s > start:
            return False
        if e is None or (end is not None and end <= e):
            return True
    return False


def txn_checks_keys(body):
    """True if a txn has a compare or a range, put or delete (nested ones included) to check
    permissions on; etcd lets a txn with none through without a user."""
    if body.get("compare"):
        return True
    for branch in ("success", "failure"):
        for req in body.get(branch) or ():
            for kind, sub in req.items():
                if kind != "request_txn" or txn_checks_keys(sub or {}):
                    return True
    return False


def check_shape(op, body):
    """BAD_REQUEST unless body is well-formed for auth op `op` (called by txncheck)."""
    for name in ("name", "password", "user", "role", "token"):
        if name in body and not isinstance(body[name], str):
            _bad(f"{name} must be a string")
    if op == "role_grant_permission":
        perm = body.get("perm")
        if not isinstance(perm, dict):
            _bad("perm must be a map {permType, key, range_end}")
        if perm.get("permType", 0) not in PERM_TYPES:
            _bad("permType must be 0 (READ), 1 (WRITE) or 2 (READWRITE)")
        _bytes_fields(perm)
    if op == "role_revoke_permission":
        _bytes_fields(body)
    if op == "user_add" and not isinstance(body.get("no_password", False), bool):
        _bad("no_password must be a boolean")


def _bytes_fields(obj):
    for name in ("key", "range_end"):
        if not isinstance(obj.get(name, b""), bytes):
            _bad(f"{name} must be bytes")


def _bad(what):
    raise RaftkvError("BAD_REQUEST", f"raftkv: {what}")


class AuthStore:
    """The auth state of one member (see the module docstring). `load(txn)` (re)reads it;
    the apply handlers in OPS change it inside the apply's txn; the rest reads it."""

    def __init__(self, engine, token_ttl_s=TOKEN_TTL_DEFAULT_S, clock=time.monotonic,
                 jwt=None):
        self._db = engine.db(AUTH_DB)
        # a new handle after the online defrag reopens the store (the state itself is the same)
        engine.on_reopen(lambda: setattr(self, "_db", engine.db(AUTH_DB)))
        self.token_ttl_s = token_ttl_s
        self.jwt = jwt  # a JwtTokens (--auth-token jwt), else simple tokens
        self._clock = clock
        self.enabled = False
        self.revision = 0
        self._users = {}
        self._roles = {}
        self._perms = {}  # user -> (read intervals, write intervals), merged; None: root
        self._tokens = {}  # token -> [user, last use]
        self._assigned = 0
        self._verified = collections.OrderedDict()  # (user, stored hash) -> HMAC of password
        self._verified_lock = threading.Lock()  # check_password runs in worker threads
        self._verify_key = os.urandom(32)
        self.ops = {"auth_enable": self._op_enable, "auth_disable": self._op_disable,
                    "user_add": self._op_user_add, "user_delete": self._op_user_delete,
                    "user_change_password": self._op_user_change_password,
                    "user_grant_role": self._op_user_grant_role,
                    "user_revoke_role": self._op_user_revoke_role,
                    "role_add": self._op_role_add, "role_delete": self._op_role_delete,
                    "role_grant_permission": self._op_role_grant_permission,
                    "role_revoke_permission": self._op_role_revoke_permission,
                    TOKEN_OP: self._op_assign_token}

    # ---- state ------------------------------------------------------------------------------

    def load(self, txn):
        """Read the committed state (at start, after a failed txn, after a snapshot)."""
        st = read_state(txn, self._db)
        self.revision, self.enabled = st["revision"], st["enabled"]
        users, roles = st["users"], st["roles"]
        self._users, self._roles, self._perms = users, roles, {}
        if not self.enabled:
            self._tokens.clear()
        for token, (user, _) in list(self._tokens.items()):
            if user not in users:
                self._tokens.pop(token, None)

    def status(self):
        return {"enabled": self.enabled, "authRevision": self.revision}

    def user_list(self):
        return sorted(self._users)

    def role_list(self):
        return sorted(self._roles)

    def user_roles(self, name):
        return list(self._user(name)["roles"])

    def roles_of(self, name):
        """user_roles, but [] for an unknown user."""
        rec = self._users.get(name)
        return list(rec["roles"]) if rec is not None else []

    def role_permissions(self, role):
        """[{permType, key, range_end}] of a role (as etcd 3.4, the root role lists only the
        permissions granted to it, though it may do anything)."""
        perms = self._roles.get(role)
        if perms is None:
            raise RaftkvError("ROLE_NOT_FOUND")
        return [{"permType": t, "key": k, "range_end": e} for t, k, e in perms]

    # ---- passwords and tokens ---------------------------------------------------------------

    def check_password(self, name, password):
        """AUTH_FAILED unless name is a user with this password. CPU-heavy the first time for
        a (user, password): run it off the event loop."""
        rec = self._users.get(name)
        stored = rec.get("password") if rec is not None else None
        if not stored or rec.get("no_password"):
            raise RaftkvError("AUTH_FAILED")
        mac = hmac.new(self._verify_key, password.encode(), hashlib.sha256).digest()
        with self._verified_lock:
            known = self._verified.get((name, stored))
        if known is not None and hmac.compare_digest(known, mac):
            return
        if not verify_password(password, stored):
            raise RaftkvError("AUTH_FAILED")
        with self._verified_lock:
            self._verified[(name, stored)] = mac
            while len(self._verified) > _VERIFIED_MAX:
                self._verified.popitem(last=False)

    @staticmethod
    def new_token_prefix():
        return secrets.token_urlsafe(12)

    def user_of_token(self, token):
        """The user a token was assigned to; INVALID_AUTH_TOKEN if unknown or expired. With
        auth off no simple token is known; a JWT is checked for its signature and expiry only
        (etcd checks its auth revision and user only for a permission, which needs auth on)."""
        if self.jwt is not None:
            user = self.jwt.check(token, self.revision if self.enabled else 0)
            if self.enabled and user not in self._users:
                raise RaftkvError("INVALID_AUTH_TOKEN")
            return user
        entry = self._tokens.get(token)
        now = self._clock()
        if entry is None or now - entry[1] > self.token_ttl_s or entry[0] not in self._users:
            self._tokens.pop(token, None)
            raise RaftkvError("INVALID_AUTH_TOKEN")
        entry[1] = now
        return entry[0]

    def _invalidate_user(self, name):
        for token, (user, _) in list(self._tokens.items()):
            if user == name:
                self._tokens.pop(token, None)

    def _sweep_tokens(self):
        now = self._clock()
        for token, (_, used) in list(self._tokens.items()):
            if now - used > self.token_ttl_s:
                self._tokens.pop(token, None)

    # ---- permission checks ------------------------------------------------------------------

    def _grants(self, user):
        """(read, write) merged intervals of user; None for a root user. USER_EMPTY with no
        user, PERMISSION_DENIED for an unknown one (etcd's isOpPermitted)."""
        if not user:
            raise RaftkvError("USER_EMPTY")
        rec = self._users.get(user)
        if rec is None:
            raise RaftkvError("PERMISSION_DENIED")
        if ROOT in rec["roles"]:
            return None
        grants = self._perms.get(user)
        if grants is None:
            read, write = [], []
            for role in rec["roles"]:
                for perm_type, key, range_end in self._roles.get(role, ()):
                    ivl = perm_interval(key, range_end)
                    if ivl is None:
                        continue
                    if perm_type in (READ, READWRITE):
                        read.append(ivl)
                    if perm_type in (WRITE, READWRITE):
                        write.append(ivl)
            grants = self._perms[user] = (merge(read), merge(write))
        return grants

    def check_admin(self, user):
        """PERMISSION_DENIED unless auth is off or user has the root role."""
        if self.enabled and self._grants(user) is not None:
            raise RaftkvError("PERMISSION_DENIED")

    def check_read(self, user, key, range_end):
        if not self.enabled:
            return
        grants = self._grants(user)
        if grants is not None and not covers(grants[0], key, range_end):
            raise RaftkvError("PERMISSION_DENIED")

    def check_write(self, op, body, user, lease_keys):
        """In apply, for a client's write: PERMISSION_DENIED (or USER_EMPTY) unless user may
        do it with the state at this point of the log. lease_keys(ID) -> keys on a lease."""
        if not self.enabled or (op not in ADMIN_OPS and op not in _KEY_OPS):
            return  # etcd 3.4 checks neither lease grants, compactions nor alarms
        if op == "lease_revoke" and not lease_keys(body.get("ID", 0)):
            return  # a lease without keys: nothing to check it against
        if op == "txn" and not txn_checks_keys(body):
            return  # nothing to check: etcd needs no user for it
        grants = self._grants(user)
        if grants is None:
            return
        if op in ADMIN_OPS:
            raise RaftkvError("PERMISSION_DENIED")
        self._check_op(op, body, grants, lease_keys)

    def _check_op(self, op, body, grants, lease_keys):
        read, write = grants

        def need(ivls, key, range_end=b""):
            if not covers(ivls, key, range_end):
                raise RaftkvError("PERMISSION_DENIED")

        key, range_end = body.get("key", b""), body.get("range_end", b"")
        if op == "range":
            need(read, key, range_end)
        elif op in ("put", "delete_range"):
            need(write, key, range_end if op == "delete_range" else b"")
            if body.get("prev_kv"):
                need(read, key, range_end if op == "delete_range" else b"")
            for k in lease_keys(body.get("lease", 0)) if op == "put" else ():
                need(write, k)
        elif op == "txn":
            for cmp in body.get("compare") or ():
                need(read, cmp.get("key", b""), cmp.get("range_end", b""))
            for branch in ("success", "failure"):
                for req in body.get(branch) or ():
                    for kind, sub in req.items():
                        self._check_op(_TXN_OPS[kind], sub, grants, lease_keys)
        elif op == "puts":
            for k in (body.get("kvs") or [])[0::2]:
                need(write, k)
        elif op == "lease_revoke":
            for k in lease_keys(body.get("ID", 0)):
                need(write, k)

    # ---- apply handlers (w: the apply's write context; w.txn the LMDB txn) ----------------

    def _commit(self, txn):
        self.revision += 1
        txn.put(_REVISION, self.revision.to_bytes(8, "big"), db=self._db)
        self._perms = {}

    def _put_user(self, txn, name, rec):
        """Store (rec None: delete) a user record."""
        self._users = self._record(txn, _USER, self._users, name, rec)

    def _put_role(self, txn, name, perms):
        """Store (perms None: delete) a role's permissions."""
        self._roles = self._record(txn, _ROLE, self._roles, name, perms)

    def _record(self, txn, prefix, table, name, value):
        """The table with name set to value (None: removed), written to the txn too. A copy:
        readers on the loop thread see the old table or the new one, never one half-changed."""
        table = dict(table)
        key = prefix + name.encode()
        if value is None:
            del table[name]
            txn.delete(key, db=self._db)
        else:
            table[name] = value
            txn.put(key, _packb(value), db=self._db)
        return table

    def _user(self, name):
        rec = self._users.get(name)
        if rec is None:
            raise RaftkvError("USER_NOT_FOUND")
        return rec

    def _op_enable(self, w, body):
        if self.enabled:
            return {}
        root = self._users.get(ROOT)
        if root is None:
            raise RaftkvError("ROOT_USER_NOT_EXIST")
        if ROOT not in root["roles"]:
            raise RaftkvError("ROOT_ROLE_NOT_EXIST")
        self.enabled = True
        w.txn.put(_ENABLED, b"\x01", db=self._db)
        self._commit(w.txn)
        return {}

    def _op_disable(self, w, body):
        if not self.enabled:
            return {}
        self.enabled = False
        w.txn.put(_ENABLED, b"\x00", db=self._db)
        self._tokens.clear()
        self._commit(w.txn)
        return {}

    def _op_user_add(self, w, body):
        name = body.get("name", "")
        if not name:
            raise RaftkvError("USER_EMPTY")
        if name in self._users:
            raise RaftkvError("USER_ALREADY_EXIST")
        no_password = bool(body.get("no_password"))
        self._put_user(w.txn, name, {"password": None if no_password else body.get("password"),
                                     "roles": [], "no_password": no_password})
        self._commit(w.txn)
        return {}

    def _op_user_delete(self, w, body):
        name = body.get("name", "")
        if self.enabled and name == ROOT:
            raise RaftkvError("INVALID_AUTH_MGMT")
        self._user(name)
        self._put_user(w.txn, name, None)
        self._invalidate_user(name)
        self._commit(w.txn)
        return {}

    def _op_user_change_password(self, w, body):
        name = body.get("name", "")
        rec = self._user(name)
        self._put_user(w.txn, name, dict(rec, password=body.get("password")))
        self._invalidate_user(name)
        self._commit(w.txn)
        return {}

    def _op_user_grant_role(self, w, body):
        name, role = body.get("user", ""), body.get("role", "")
        rec = self._user(name)
        if role != ROOT and role not in self._roles:
            raise RaftkvError("ROLE_NOT_FOUND")
        if role in rec["roles"]:
            return {}  # etcd: granted already, nothing changes
        self._put_user(w.txn, name, dict(rec, roles=sorted(rec["roles"] + [role])))
        self._commit(w.txn)
        return {}

    def _op_user_revoke_role(self, w, body):
        name, role = body.get("name", ""), body.get("role", "")
        if self.enabled and name == ROOT and role == ROOT:
            raise RaftkvError("INVALID_AUTH_MGMT")
        rec = self._user(name)
        if role not in rec["roles"]:
            raise RaftkvError("ROLE_NOT_GRANTED")
        self._put_user(w.txn, name, dict(rec, roles=[r for r in rec["roles"] if r != role]))
        self._commit(w.txn)
        return {}

    def _op_role_add(self, w, body):
        name = body.get("name", "")
        if not name:
            raise RaftkvError("ROLE_EMPTY")
        if name in self._roles:
            raise RaftkvError("ROLE_ALREADY_EXIST")
        self._put_role(w.txn, name, [])
        self._commit(w.txn)
        return {}

    def _op_role_delete(self, w, body):
        role = body.get("role", "")
        if self.enabled and role == ROOT:
            raise RaftkvError("INVALID_AUTH_MGMT")
        if role not in self._roles:
            raise RaftkvError("ROLE_NOT_FOUND")
        self._put_role(w.txn, role, None)
        for name, rec in sorted(self._users.items()):
            if role in rec["roles"]:
                self._put_user(w.txn, name,
                               dict(rec, roles=[r for r in rec["roles"] if r != role]))
        self._commit(w.txn)
        return {}

    def _op_role_grant_permission(self, w, body):
        name, perm = body.get("name", ""), body.get("perm") or {}
        if name not in self._roles:
            raise RaftkvError("ROLE_NOT_FOUND")
        key, range_end = perm.get("key", b""), perm.get("range_end", b"")
        new = (perm.get("permType", READ), key, range_end)
        perms = list(self._roles[name])
        # As etcd 3.4's RoleGrantPermission: only the first permission with a key >= key is
        # updated in place if it is the same range; anything else is appended and the list
        # sorted again by key alone (so a role may list the same range twice: a grant of
        # (k, e2) while (k, e1) comes first appends another (k, e2)).
        idx = bisect.bisect_left([p[1] for p in perms], key)
        if idx < len(perms) and perms[idx][1:] == new[1:]:
            perms[idx] = new
        else:
            perms.append(new)
            _sort_as_etcd(perms)
        self._put_role(w.txn, name, perms)
        self._commit(w.txn)
        return {}

    def _op_role_revoke_permission(self, w, body):
        role = body.get("role", "")
        if role not in self._roles:
            raise RaftkvError("ROLE_NOT_FOUND")
        key, range_end = body.get("key", b""), body.get("range_end", b"")
        perms = [p for p in self._roles[role] if (p[1], p[2]) != (key, range_end)]
        if len(perms) == len(self._roles[role]):
            raise RaftkvError("PERMISSION_NOT_GRANTED")
        self._put_role(w.txn, role, perms)
        self._commit(w.txn)
        return {}

    def _op_assign_token(self, w, body):
        """Every member learns the token; only memory changes (tokens are not persisted)."""
        name, token = body.get("name", ""), body.get("token", "")
        if not self.enabled:
            raise RaftkvError("AUTH_NOT_ENABLED")
        if name not in self._users or not token:
            raise RaftkvError("AUTH_FAILED")
        self._tokens[token] = [name, self._clock()]
        self._assigned += 1
        if self._assigned % _TOKEN_SWEEP_EVERY == 0:
            self._sweep_tokens()
        return {"token": token}
