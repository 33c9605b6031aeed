"""The cold archive tier (L2): old message-log rows as Parquet files in the object store.

``format``: the file layout (one file per conversation and month, its manifest); ``archiver``: moves rows
from the embedded SQLite log to the object store (``flare archive run|status|verify``); ``reader``: the
message log seen through both tiers, so reads and operations do not see where a message lives.
"""
