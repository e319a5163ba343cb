"""Reading an offline W&B run back: the records of its ``run-<id>.wandb`` file.

wandb 0.31 dropped its Python reader, so this is the file format as W&B's core writes it: a
7-byte header (``:W&B``, magic, version), then LevelDB's log format: 32 KiB blocks of chunks,
each with a 7-byte header (CRC, little-endian length, type: 1 full, 2 first, 3 middle, 4 last),
holding serialised ``wandb_internal_pb2.Record`` messages. The CRCs are not checked.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pending = FILE_HEADER, b""
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < CHUNK_HEADER:
            position += left_in_block  # the block's zero padding
            continue
        _, length, kind = struct.unpack_from("<IHB", data, position)
        chunk = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        else:
            break  # zeros after the last record
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def offline_records(run_dir: Path) -> list[list[wandb_internal_pb2.Record]]:
    """The records of every offline W&B run under ``run_dir``, oldest run first."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    return [list(records(path)) for path in files]
