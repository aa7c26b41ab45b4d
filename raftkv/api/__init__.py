"""raftkv.api (see docs/ARCHITECTURE.md)."""
