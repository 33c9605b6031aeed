"""One archive part: the message-log rows of one conversation and month, as a Parquet file plus a JSON manifest.

A row holds every stored column of the SQLite ``messages`` table (messages and operation events alike), so a
row read back decodes to the same ``Message`` as before it left: the history page it is on is the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

# The column order of a row tuple everywhere in this package: the first 12 are what the SQLite log reads.
COLUMNS = "conv, seq, msg_id, sender, cmid, kind, body, ts, version, state, edited_at, reactions, reply_seq, target"
SCHEMA = pa.schema(
    [
        ("conv", pa.string()),
        ("seq", pa.int64()),
        ("msg_id", pa.int64()),
        ("sender", pa.string()),
        ("cmid", pa.string()),
        ("kind", pa.string()),
        ("body", pa.binary()),
        ("ts", pa.int64()),
        ("version", pa.int64()),
        ("state", pa.string()),
        ("edited_at", pa.int64()),
        ("reactions", pa.binary()),
        ("reply_seq", pa.int64()),
        ("target", pa.int64()),
    ]
)
ROW_GROUP = 4096  # rows per row group: the unit the reader decodes and caches
FORMAT = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    conv: str
    month: str  # YYYY-MM (UTC) of the rows' ts
    lo: int  # first seq
    hi: int  # last seq
    rows: int
    size: int  # of the Parquet file
    sha256: str  # of the Parquet file
    key: str  # of the Parquet file in the object store
    format: int = FORMAT

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def decode(data: bytes) -> Manifest:
        return Manifest(**json.loads(data))


def part_key(conv: str, month: str, lo: int, hi: int) -> str:
    # The conversation id in hex: object keys allow only [A-Za-z0-9._-/] and conversation ids have ':'.
    return f"archive/{conv.encode().hex()}/{month}-{lo}-{hi}.parquet"


def manifest_key(key: str) -> str:
    return key.removesuffix(".parquet") + ".json"


def encode(rows: list[tuple[Any, ...]]) -> bytes:
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA]
    table = pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA
    )
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd", row_group_size=ROW_GROUP)
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_file(data: bytes) -> pq.ParquetFile:
    return pq.ParquetFile(io.BytesIO(data))


def decode_group(file: pq.ParquetFile, index: int) -> list[tuple[Any, ...]]:
    """Row group ``index`` as row tuples in ``COLUMNS`` order (ascending seq: files are written that way)."""
    table = file.read_row_group(index)
    if table.schema.names != SCHEMA.names:
        raise ValueError(f"archive file columns {table.schema.names} are not {SCHEMA.names}")
    return list(zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True))


def decode(data: bytes) -> list[tuple[Any, ...]]:
    file = open_file(data)
    return [row for i in range(file.num_row_groups) for row in decode_group(file, i)]


def group_ranges(file: pq.ParquetFile) -> list[tuple[int, int]]:
    """(first seq, last seq) of each row group, from the file's statistics (no decoding)."""
    seq = SCHEMA.names.index("seq")
    out = []
    for i in range(file.num_row_groups):
        stats = file.metadata.row_group(i).column(seq).statistics
        if stats is None or not stats.has_min_max:
            raise ValueError("archive file without seq statistics")
        out.append((int(stats.min), int(stats.max)))
    return out


def may_refer(file: pq.ParquetFile, index: int, target: int) -> bool:
    """Whether row group ``index`` may hold a row whose reply_seq or target is ``target`` (statistics say)."""
    group = file.metadata.row_group(index)
    for name in ("reply_seq", "target"):
        stats = group.column(SCHEMA.names.index(name)).statistics
        if stats is None or not stats.has_min_max:
            if stats is None or stats.null_count != group.num_rows:
                return True  # no statistics: cannot tell
            continue  # all null
        if stats.min <= target <= stats.max:
            return True
    return False
