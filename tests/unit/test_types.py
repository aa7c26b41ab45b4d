"""The shared Raft vocabulary behaves as the rest of raftkv assumes."""
from raftkv.raft.types import LOCAL_MSGS, Entry, EntryType, HardState, Message, MsgType, Snapshot


def test_entry_defaults_and_size():
    e = Entry(term=2, index=7)
    assert e.type == EntryType.NORMAL
    assert e.data == b""
    assert Entry(1, 1, EntryType.NORMAL, b"x" * 10).size() == 35


def test_hard_state_and_snapshot_emptiness():
    assert HardState().is_empty()
    assert not HardState(term=1).is_empty()
    assert Snapshot().is_empty()


def test_local_messages_are_not_wire_messages():
    assert MsgType.HUP in LOCAL_MSGS
    assert MsgType.APP not in LOCAL_MSGS
    m = Message(MsgType.APP, to=2, frm=1, term=3)
    assert m.entries == [] and m.snapshot is None
