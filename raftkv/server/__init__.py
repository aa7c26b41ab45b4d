"""raftkv.server (see docs/ARCHITECTURE.md)."""
