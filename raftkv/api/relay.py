"""The byte relay of the client port's gRPC connections (raftkv/api/mux.py): the C one
(raftkv.api._crelay over csrc/relay.c, a pthread that never takes the GIL) or its pure-Python
twin (raftkv.api._pyrelay), chosen with the storage backend (raftkv.storage.BACKEND, which
honours RAFTKV_PUREPYTHON=1 and RAFTKV_REQUIRE_C=1)."""
import os

from raftkv.storage import BACKEND as _STORAGE_BACKEND

__all__ = ["BACKEND", "Relay"]


def _load():
    if _STORAGE_BACKEND == "c":
        try:
            from raftkv.api import _crelay

            return "c", _crelay.Relay
        except ImportError as exc:
            if os.environ.get("RAFTKV_REQUIRE_C") == "1":
                raise ImportError("raftkv.api.relay: RAFTKV_REQUIRE_C=1 but the C relay is "
                                  f"unavailable: {exc}") from exc
    from raftkv.api import _pyrelay

    return "pure", _pyrelay.Relay


BACKEND, Relay = _load()
