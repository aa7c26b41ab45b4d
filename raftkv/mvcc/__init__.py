"""raftkv.mvcc (see docs/ARCHITECTURE.md)."""
