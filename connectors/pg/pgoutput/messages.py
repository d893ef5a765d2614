"""The values a pgoutput message decodes to: one frozen, slotted dataclass per message type.

Owns: the message types of protocol versions 1 to 4 (``Begin`` .. ``StreamPrepare``, the ``Message``
union), the column-value forms (text ``str``, binary ``bytes``, NULL ``None``, ``UNCHANGED_TOAST``),
PostgreSQL's timestamp epoch, and the fast constructors the decoder builds row changes with.

Must not: parse bytes (that is :mod:`connectors.pg.pgoutput.decoder`), do I/O, or import psycopg or
Kafka clients.  The classes are plain values; the capture loop dispatches on their types.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "PG_EPOCH_UNIX_MS",
    "UNCHANGED_TOAST",
    "Begin",
    "BeginPrepare",
    "ColumnValue",
    "Commit",
    "CommitPrepared",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "Prepare",
    "Relation",
    "RelationColumn",
    "RollbackPrepared",
    "StreamAbort",
    "StreamCommit",
    "StreamPrepare",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleData",
    "Type",
    "UnchangedToast",
    "Update",
    "new_delete",
    "new_insert",
    "new_update",
    "pg_time_to_unix_ms",
]

# 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch, in Unix milliseconds.
PG_EPOCH_UNIX_MS: Final = 946_684_800_000


def pg_time_to_unix_ms(pg_us: int) -> int:
    """Convert a PostgreSQL wire timestamp (microseconds since 2000-01-01 UTC) to Unix milliseconds."""
    # Floor division keeps pre-epoch values monotonic (rounds toward the past).
    return pg_us // 1000 + PG_EPOCH_UNIX_MS


class UnchangedToast(enum.Enum):
    """Type of the sentinel for a TOASTed column that an UPDATE did not change (tuple kind ``'u'``).

    pgoutput does not send such a value at all, so it must never be confused with NULL.
    """

    UNCHANGED_TOAST = "u"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    __str__ = __repr__


UNCHANGED_TOAST: Final = UnchangedToast.UNCHANGED_TOAST

ColumnValue: TypeAlias = str | bytes | Literal[UnchangedToast.UNCHANGED_TOAST] | None
TupleData: TypeAlias = tuple[ColumnValue, ...]


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Begin:
    """``B``: start of a (non-streamed) transaction."""

    final_lsn: int
    commit_time: int  # microseconds since 2000-01-01 UTC, as sent
    xid: int

    @property
    def commit_time_unix_ms(self) -> int:
        return pg_time_to_unix_ms(self.commit_time)


@dataclass(frozen=True, slots=True)
class Commit:
    """``C``: end of a (non-streamed) transaction."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int

    @property
    def commit_time_unix_ms(self) -> int:
        return pg_time_to_unix_ms(self.commit_time)


@dataclass(frozen=True, slots=True)
class Origin:
    """``O``: the transaction was replayed from another node (replication origin ``name``)."""

    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    is_key: bool
    name: str
    type_oid: int
    type_modifier: int


@dataclass(frozen=True, slots=True)
class Relation:
    """``R``: describes a relation before its first change in a session (and after DDL on it).

    ``namespace`` is empty for ``pg_catalog``.  ``replica_identity`` is the relreplident letter:
    ``d`` default, ``n`` nothing, ``f`` full, ``i`` index.  ``xid`` is set only inside a stream block.
    """

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Type:
    """``Y``: describes a non-built-in data type used by a following Relation."""

    oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: TupleData
    xid: int | None = None  # inside a stream block: the (sub)transaction that made the change


@dataclass(frozen=True, slots=True)
class Update:
    """``U``. ``old`` is the replica-identity key (``old_kind='K'``), the whole old row
    (``'O'``, REPLICA IDENTITY FULL), or absent when the key did not change."""

    relation_oid: int
    old: TupleData | None
    old_kind: Literal["K", "O"] | None
    new: TupleData
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old: TupleData
    old_kind: Literal["K", "O"]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    cascade: bool
    restart_identity: bool
    relation_oids: tuple[int, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``M``: from ``pg_logical_emit_message``; only sent with the ``messages`` option on."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """``S`` (protocol 2+): opens a block of changes of the in-progress transaction ``xid``."""

    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    """``E`` (protocol 2+): closes the current stream block."""


@dataclass(frozen=True, slots=True)
class StreamCommit:
    """``c`` (protocol 2+): the streamed transaction ``xid`` committed."""

    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int

    @property
    def commit_time_unix_ms(self) -> int:
        return pg_time_to_unix_ms(self.commit_time)


@dataclass(frozen=True, slots=True)
class StreamAbort:
    """``A`` (protocol 2+): streamed (sub)transaction ``subxid`` of ``xid`` aborted.

    ``subxid == xid`` means the whole transaction aborted.  ``abort_lsn``/``abort_time`` are only sent
    with protocol 4 and ``streaming = parallel``.
    """

    xid: int
    subxid: int
    abort_lsn: int | None = None
    abort_time: int | None = None


@dataclass(frozen=True, slots=True)
class BeginPrepare:
    """``b`` (protocol 3+, two_phase): start of a transaction being prepared."""

    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class Prepare:
    """``P`` (protocol 3+): the transaction ``gid`` was prepared (PREPARE TRANSACTION)."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class CommitPrepared:
    """``K`` (protocol 3+): COMMIT PREPARED of ``gid``."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class RollbackPrepared:
    """``r`` (protocol 3+): ROLLBACK PREPARED of ``gid``."""

    flags: int
    prepare_end_lsn: int
    rollback_end_lsn: int
    prepare_time: int
    rollback_time: int
    xid: int
    gid: str


@dataclass(frozen=True, slots=True)
class StreamPrepare:
    """``p`` (protocol 3+): a streamed transaction was prepared."""

    flags: int
    prepare_lsn: int
    end_lsn: int
    prepare_time: int
    xid: int
    gid: str


Message: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
    | BeginPrepare
    | Prepare
    | CommitPrepared
    | RollbackPrepared
    | StreamPrepare
)


# Row-change constructors for the decoder's hot path, which set the slots directly.  A frozen
# dataclass's own __init__ goes through object.__setattr__ per field, which made construction about
# 40% of decoding a small Insert; these build an identical, still-frozen object in well under half
# the time.


def _slot_setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The raw slot descriptor's setter, which bypasses the dataclass's frozen __setattr__."""
    setter: Callable[[object, object], None] = vars(cls)[name].__set__
    return setter


_set_insert_oid = _slot_setter(Insert, "relation_oid")
_set_insert_new = _slot_setter(Insert, "new")
_set_insert_xid = _slot_setter(Insert, "xid")
_set_update_oid = _slot_setter(Update, "relation_oid")
_set_update_old = _slot_setter(Update, "old")
_set_update_old_kind = _slot_setter(Update, "old_kind")
_set_update_new = _slot_setter(Update, "new")
_set_update_xid = _slot_setter(Update, "xid")
_set_delete_oid = _slot_setter(Delete, "relation_oid")
_set_delete_old = _slot_setter(Delete, "old")
_set_delete_old_kind = _slot_setter(Delete, "old_kind")
_set_delete_xid = _slot_setter(Delete, "xid")
_object_new = object.__new__


def new_insert(relation_oid: int, new: TupleData, xid: int | None) -> Insert:
    obj: Insert = _object_new(Insert)
    _set_insert_oid(obj, relation_oid)
    _set_insert_new(obj, new)
    _set_insert_xid(obj, xid)
    return obj


def new_update(
    relation_oid: int, old: TupleData | None, old_kind: Literal["K", "O"] | None, new: TupleData, xid: int | None
) -> Update:
    obj: Update = _object_new(Update)
    _set_update_oid(obj, relation_oid)
    _set_update_old(obj, old)
    _set_update_old_kind(obj, old_kind)
    _set_update_new(obj, new)
    _set_update_xid(obj, xid)
    return obj


def new_delete(relation_oid: int, old: TupleData, old_kind: Literal["K", "O"], xid: int | None) -> Delete:
    obj: Delete = _object_new(Delete)
    _set_delete_oid(obj, relation_oid)
    _set_delete_old(obj, old)
    _set_delete_old_kind(obj, old_kind)
    _set_delete_xid(obj, xid)
    return obj
