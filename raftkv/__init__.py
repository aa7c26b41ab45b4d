"""raftkv: a distributed, reliable key-value store in the spirit of etcd."""

__version__ = "0.1.0"


def __getattr__(name):
    # Imported lazily so that `import raftkv` (server, tools) does not pull in the client.
    if name in ("Client", "AsyncClient"):
        from raftkv import client

        return getattr(client, name)
    raise AttributeError(f"module 'raftkv' has no attribute {name!r}")


__all__ = ["AsyncClient", "Client", "__version__"]
