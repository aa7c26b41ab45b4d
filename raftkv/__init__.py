"""raftkv: a distributed, reliable key-value store in the spirit of etcd."""

__version__ = "0.1.0"
