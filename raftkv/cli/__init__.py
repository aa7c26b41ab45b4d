"""raftkv.cli (see docs/ARCHITECTURE.md)."""
