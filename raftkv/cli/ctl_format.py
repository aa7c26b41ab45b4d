"""raftkvctl's output formats, as etcdctl 3.4 prints them: simple lines, json (Go's
encoding/json of the protobuf structs), table (tablewriter), fields ("Name" : value lines);
the error that carries etcdctl's wording and exit status; and etcdctl's global flags after the
verb. raftkvutl (raftkv.utl.main) shares these and must not import raftkv.cli.ctl: raftkvctl
builds raftkvutl's parsers, so `python -m raftkv.cli.ctl` (ctl run as __main__) would load ctl
a second time."""
from __future__ import annotations

import base64
import json
import math

EXIT_BAD_ARGS = 128  # etcdctl's exit codes (ctlv3/command/error.go)
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
UNSUPPORTED = object()  # _emit(fields=UNSUPPORTED): etcdctl has no fields printer for it


class _Failed(Exception):
    """A command failed with etcdctl's own wording of the error (and its exit status)."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


def bad_args(message):
    """etcdctl's ExitWithError(ExitBadArgs, ...): an "Error:" line and exit status 128."""
    return _Failed(message, exit_code=EXIT_BAD_ARGS)


def _s(b):
    return b.decode("utf-8", "backslashreplace") if isinstance(b, bytes) else str(b)


def _jsonable(obj):
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _print_json(obj, out):
    """Compact, as Go's encoding/json (etcdctl's -w json)."""
    out.write(json.dumps(_jsonable(obj), separators=(",", ":")) + "\n")


_ONEOF = {"response_range": "ResponseRange", "response_put": "ResponsePut",
          "response_delete_range": "ResponseDeleteRange", "response_txn": "ResponseTxn"}


def _zero(v):
    return v is None or v is False or (isinstance(v, (int, float)) and v == 0) or \
        (isinstance(v, (str, bytes, list, tuple)) and len(v) == 0)


HEADER_FIELDS = ("cluster_id", "member_id", "revision", "raft_term")  # the protobuf's order


def _in_header_order(header):
    if not isinstance(header, dict):
        return header
    return {**{k: header[k] for k in HEADER_FIELDS if k in header}, **header}


def pb_json(obj):
    """A response as etcdctl's -w json prints a protobuf message (Go's encoding/json of the
    generated struct): zero values (0, false, "", empty bytes and lists) left out, as their
    omitempty tags say, a header's fields in the protobuf's order, and a txn's responses in
    their oneof wrapper ({"Response": {"ResponseRange": ...}})."""
    if isinstance(obj, dict):
        if len(obj) == 1 and next(iter(obj)) in _ONEOF:
            name, body = next(iter(obj.items()))
            return {"Response": {_ONEOF[name]: pb_json(body)}}
        return {k: pb_json(_in_header_order(v) if k == "header" else v)
                for k, v in obj.items() if not _zero(v)}
    if isinstance(obj, (list, tuple)):
        return [pb_json(v) for v in obj]
    return obj


def go_quote(s):
    """Go's %q of a string (strconv.Quote), for etcdctl's -w fields."""
    s = _s(s)
    special = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}
    out = []
    for ch in s:
        if ch in special:
            out.append(special[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _go(v):
    """Go's fmt.Println of a value: booleans in lower case, slices as [a b]."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_go(x) for x in v) + "]"
    return _s(v)


class Fields:
    """etcdctl's -w fields printer: one "Name" : value line each."""

    def __init__(self, out):
        self.out = out

    def line(self, name, value, quote=False):
        self.out.write(f'"{name}" : {go_quote(value) if quote else _go(value)}\n')

    def hdr(self, h):
        h = h or {}
        for name, key in (("ClusterID", "cluster_id"), ("MemberID", "member_id"),
                          ("Revision", "revision"), ("RaftTerm", "raft_term")):
            self.line(name, h.get(key, 0))

    def kv(self, kv, pfx=""):
        self.line(pfx + "Key", kv.get("key", b""), quote=True)
        for name, key in (("CreateRevision", "create_revision"),
                          ("ModRevision", "mod_revision"), ("Version", "version")):
            self.line(pfx + name, kv.get(key, 0))
        self.line(pfx + "Value", kv.get("value", b""), quote=True)
        self.line(pfx + "Lease", kv.get("lease", 0))

    def get(self, r):
        self.hdr(r.get("header"))
        for kv in r.get("kvs", []):
            self.kv(kv)
        self.line("More", bool(r.get("more", False)))
        self.line("Count", r.get("count", 0))

    def put(self, r):
        self.hdr(r.get("header"))
        if r.get("prev_kv"):
            self.kv(r["prev_kv"], "Prev")

    def delete(self, r):
        self.hdr(r.get("header"))
        self.line("Deleted", r.get("deleted", 0))
        for kv in r.get("prev_kvs", []):
            self.kv(kv, "Prev")

    def txn(self, r):
        self.hdr(r.get("header"))
        self.line("Succeeded", bool(r.get("succeeded", False)))
        for op in r.get("responses", []):
            if "response_delete_range" in op:
                self.delete(op["response_delete_range"])
            elif "response_put" in op:
                self.put(op["response_put"])
            elif "response_range" in op:
                self.get(op["response_range"])


def write_table(headers, rows, out, align=">"):
    """etcdctl's tables (tablewriter with ALIGN_RIGHT): headers centred, cells right-aligned
    (or centred: align "^")."""
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(headers)]
    widths = [max(len(c) for c in col) for col in cols]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells, how):
        return "|" + "|".join(f" {str(c):{how}{w}} " for c, w in zip(cells, widths)) + "|"

    out.write("\n".join([line, fmt(headers, "^"), line] + [fmt(r, align) for r in rows]
                        + [line]) + "\n")


def _print_kvs(kvs, args, out):
    for kv in kvs:
        if not getattr(args, "print_value_only", False):
            out.write(_s(kv.get("key", b"")) + "\n")
        out.write(_s(kv.get("value", b"")) + "\n")  # with --keys-only: an empty line


def _emit(args, out, resp, simple, table=None, fields=None, pb=True):
    """Print resp in the chosen format: simple(), table() and fields(Fields) print the
    others (etcdctl prints simple output where a format has no printer; fields=UNSUPPORTED:
    etcdctl's "fields not supported" error instead). pb: resp is a protobuf response,
    printed as etcdctl's json does (pb_json)."""
    if args.write_out == "json":
        _print_json(pb_json(resp) if pb else resp, out)
    elif args.write_out == "fields" and fields is UNSUPPORTED:
        raise _Failed("fields not supported as output format", exit_code=EXIT_BAD_FEATURE)
    elif args.write_out == "fields" and fields is not None:
        fields(Fields(out))
    elif args.write_out == "table":
        if table is None:  # etcdctl 3.4 draws tables for member list and endpoint only
            raise _Failed("table not supported as output format", exit_code=EXIT_BAD_FEATURE)
        headers, rows = table()
        write_table(headers, rows, out)
    else:
        simple()


def print_range(args, out, resp):
    """A range response as etcdctl's get prints it (also lock's and elect's leader key)."""
    count_only = getattr(args, "count_only", False)

    def simple():
        if count_only:
            out.write(f"{resp.get('count', 0)}\n")
        else:
            _print_kvs(resp.get("kvs", []), args, out)

    def table():  # etcdctl 3.4 has no table for get; raftkvctl draws one (issue #5)
        if count_only:
            return ["COUNT"], [[str(resp.get("count", 0))]]
        if getattr(args, "keys_only", False):
            return ["KEY"], [[_s(kv["key"])] for kv in resp.get("kvs", [])]
        return ["KEY", "VALUE"], [[_s(kv["key"]), _s(kv.get("value", b""))]
                                  for kv in resp.get("kvs", [])]

    _emit(args, out, resp, simple, table, fields=lambda f: f.get(resp))


def human_bytes(n):
    """etcdctl's sizes (go-humanize's Bytes): "16 kB", "2.1 MB", "9 B"."""
    if n < 10:
        return f"{n:.0f} B"
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    e = 0
    while n >= 1000 ** (e + 1) and e < len(units) - 1:
        e += 1
    val = math.floor(n / 1000 ** e * 10 + 0.5) / 10
    return f"{val:.1f} {units[e]}" if val < 10 else f"{val:.0f} {units[e]}"


_GLOBAL_WITH_VALUE = ("--endpoints", "-w", "--write-out", "--command-timeout", "--cacert",
                      "--cert", "--key", "--user", "--password")
_GLOBAL_SWITCHES = ("--insecure-skip-tls-verify",)


def hoist_global_flags(argv):
    """Global flags may come after the verb, as with etcdctl (`endpoint status -w table`):
    move them in front of it. Nothing after a `--` is touched."""
    front, rest, it = [], [], iter(argv)
    for tok in it:
        if tok == "--":
            rest.append(tok)
            rest.extend(it)
            break
        name = tok.split("=", 1)[0]
        if name in _GLOBAL_WITH_VALUE:
            front.append(tok)
            if "=" not in tok:
                front.append(next(it, ""))
        elif tok in _GLOBAL_SWITCHES:
            front.append(tok)
        else:
            rest.append(tok)
    return front + rest
