"""Offline tools on files and data dirs (etcd 3.5's etcdutl): `raftkvutl snapshot restore`
builds member data dirs from a snapshot file, `raftkvutl snapshot status` describes one."""
