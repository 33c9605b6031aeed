"""Tables of the ClickHouse message log, their row types, and the SQL that reads a row's latest version.

Every table is created by the adapter (``CREATE TABLE IF NOT EXISTS``) and runs on ClickHouse 18.16 and on
current ClickHouse (chdb): epoch milliseconds are Int64 (no DateTime64), flags are UInt8 (no Bool), optional
seqs are 0 (seqs start at 1) rather than Nullable. ClickHouse has no UPDATE in place worth using here: a
changed row is a new row with a larger ``row_version``; ReplacingMergeTree keeps only the largest one when it
merges parts, and until then every read picks the latest itself (``LATEST_BY``).

Latest version on read: ``ORDER BY ..., row_version DESC LIMIT 1 BY <key>``, not ``FINAL``. Measured on 18.16
(2 M messages in 2000 conversations over 13 monthly partitions, ~60 parts, 10% of rows in two versions; a page
of 50 messages, medians): with the default 8192-row granules, FINAL 120-130 ms, argMax per column or of a tuple
20-25 ms, LIMIT 1 BY 20-22 ms; with the 1024-row granules used below, FINAL 40-67 ms, LIMIT 1 BY 15-28 ms
(bench/clickhouse_log.py measures the latter). 18.16 merges every selected range in one thread for FINAL;
LIMIT 1 BY sorts only the rows the primary key selected. argMax is as fast but needs one aggregate per column.

Column codecs: ClickHouse 18.16 has no ``CODEC`` clause (a syntax error), so ``schema(codecs=False)`` relies
on the server's default compression (LZ4) there, and the adapter asks for codecs only from 20.1 on (every codec
named below exists there; 19.x added them release by release and is not tested). The choice per column: the
sort key ``conv`` repeats in long runs (ZSTD); ``seq``, ``msg_id``, ``ts`` and ``list_version`` grow within a
conversation, so their deltas are small (Delta then ZSTD); small or mostly-zero integers (``version``,
``edited_at``, ``reply_seq``, ``target``, ``row_version``) lose their unused high bits to T64; ``body`` is the
bulk of the table and text, worth a stronger ZSTD level.
"""

from __future__ import annotations

import msgspec

from flare_im.ids import COUNTER_BITS, EPOCH_MS, NODE_BITS

CODECS_SINCE = (20, 1)  # the first ClickHouse release the codecs below are used on

_STRING = "ZSTD(1)"
_GROWING = "Delta, ZSTD(1)"
_SMALL = "T64, ZSTD(1)"

# (name, type, codec) per table. Column order is the order of the row Structs below.
_MESSAGES = (
    ("conv", "String", _STRING),
    ("seq", "UInt64", _GROWING),
    ("msg_id", "UInt64", _GROWING),
    ("sender", "String", _STRING),
    ("cmid", "String", _STRING),
    ("kind", "String", _STRING),
    ("body", "String", "ZSTD(3)"),
    ("ts", "Int64", _GROWING),
    ("version", "UInt32", _SMALL),
    ("state", "String", _STRING),
    ("edited_at", "Int64", _SMALL),
    ("reactions", "String", _STRING),
    ("list_version", "UInt64", _GROWING),
    ("reply_seq", "UInt64", _SMALL),
    ("target", "UInt64", _SMALL),
    ("row_version", "UInt64", _SMALL),
)
_REVISIONS = (
    ("conv", "String", _STRING),
    ("seq", "UInt64", _GROWING),
    ("version", "UInt32", _SMALL),
    ("body", "String", "ZSTD(3)"),
    ("ts", "Int64", _GROWING),
    ("deleted", "UInt8", _SMALL),
    ("row_version", "UInt64", _SMALL),
)
_CLIENT_IDS = (
    ("sender", "String", _STRING),
    ("cmid", "String", _STRING),
    ("msg_id", "UInt64", _GROWING),
    ("conv", "String", _STRING),
    ("seq", "UInt64", _GROWING),
    ("ts", "Int64", _GROWING),
)
_REFS = (
    ("conv", "String", _STRING),
    ("ref", "UInt64", _GROWING),
    ("seq", "UInt64", _GROWING),
    ("kind", "String", _STRING),
)
_HEADS = (
    ("conv", "String", _STRING),
    ("max_seq", "UInt64", _GROWING),
    ("version", "UInt64", _GROWING),
)

_MONTH_OF_TS = "toYYYYMM(toDateTime(intDiv(ts, 1000), 'UTC'))"
# The month a snowflake message id was generated in (see flare_im.ids): partitions of client_ids carry a
# min/max index of msg_id, so "ids since T" reads only the recent partitions.
_MONTH_OF_MSG_ID = (
    f"toYYYYMM(toDateTime(intDiv(bitShiftRight(msg_id, {NODE_BITS + COUNTER_BITS}) + {EPOCH_MS}, 1000), 'UTC'))"
)
# Range and point reads select a few dozen rows: small granules read less of the neighbouring conversations.
_SMALL_GRANULES = "SETTINGS index_granularity = 1024"

# (table, columns, engine and keys)
_TABLES = (
    # Every event of every conversation. A row's ts never changes, so all its versions share one partition
    # (ReplacingMergeTree only replaces within a partition).
    (
        "messages",
        _MESSAGES,
        f"ReplacingMergeTree(row_version) PARTITION BY {_MONTH_OF_TS} ORDER BY (conv, seq) {_SMALL_GRANULES}",
    ),
    # Earlier versions of edited messages; a recall writes them again with deleted = 1.
    ("revisions", _REVISIONS, "ReplacingMergeTree(row_version) ORDER BY (conv, seq, version)"),
    # (sender, cmid) -> (conv, seq): find_by_client_id without scanning messages; by msg_id month for
    # recent_client_ids.
    (
        "client_ids",
        _CLIENT_IDS,
        f"ReplacingMergeTree() PARTITION BY {_MONTH_OF_MSG_ID} ORDER BY (sender, cmid, msg_id) {_SMALL_GRANULES}",
    ),
    # What a recall must reach without scanning its conversation: the replies quoting a message
    # (kind 'reply') and its edit events (kind 'edit'), by the seq they refer to.
    ("message_refs", _REFS, "ReplacingMergeTree() ORDER BY (conv, ref, seq)"),
    # Conversation heads: every row carries the maximum of both columns so far, so the merge (which keeps the
    # largest max_seq) loses nothing; readers take max() of both, correct before any merge too.
    ("conv_heads", _HEADS, "ReplacingMergeTree(max_seq) ORDER BY conv"),
)

TABLES = tuple(name for name, _, _ in _TABLES)


def schema(*, codecs: bool) -> list[str]:
    """The CREATE TABLE statements, with column codecs if the engine has them (see the module docstring)."""
    statements = []
    for name, columns, engine in _TABLES:
        cols = ", ".join(f"{c} {t} CODEC({codec})" if codecs else f"{c} {t}" for c, t, codec in columns)
        statements.append(f"CREATE TABLE IF NOT EXISTS {name} ({cols}) ENGINE = {engine}")
    return statements


def codecs_supported(version: str) -> bool:
    """Whether ClickHouse ``version`` ("18.16.1", "26.9.2.1") gets column codecs."""
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return parts >= CODECS_SINCE


class MessageRow(msgspec.Struct, kw_only=True):
    """One version of a row of ``messages``."""

    conv: str
    seq: int
    msg_id: int
    sender: str
    cmid: str
    kind: str
    body: str  # JSON object
    ts: int
    version: int
    state: str
    edited_at: int
    reactions: str  # JSON object {emoji: [user, ...]}, "" when none
    list_version: int  # the conversation-list version at which this row last changed
    reply_seq: int  # the message this one quotes, 0 if none
    target: int  # an operation event: the seq it applied to, else 0
    row_version: int


class RevisionRow(msgspec.Struct, kw_only=True):
    conv: str
    seq: int
    version: int
    body: str
    ts: int
    deleted: int
    row_version: int


class ClientIdRow(msgspec.Struct, kw_only=True):
    sender: str
    cmid: str
    msg_id: int
    conv: str
    seq: int
    ts: int


class RefRow(msgspec.Struct, kw_only=True):
    conv: str
    ref: int
    seq: int
    kind: str  # "reply" | "edit"


class HeadRow(msgspec.Struct, kw_only=True):
    conv: str
    max_seq: int
    version: int


def columns(row_type: type[msgspec.Struct]) -> str:
    return ", ".join(row_type.__struct_fields__)


MESSAGE_COLUMNS = columns(MessageRow)
REVISION_COLUMNS = columns(RevisionRow)
