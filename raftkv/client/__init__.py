"""raftkv.client (see docs/ARCHITECTURE.md)."""
