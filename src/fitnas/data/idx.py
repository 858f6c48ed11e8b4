"""IDX files (the MNIST family's format): strict reading and writing of unsigned-byte arrays."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from fitnas.errors import DataError



# IDX type code for unsigned bytes, the only type the MNIST family uses.
_IDX_UBYTE = 0x08


# --------------------------------------------------------------------------
# IDX files


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) of unsigned bytes into a uint8 array."""
    path = Path(path)
    fix = f"delete {path} and fetch it again (or reinstall the package it came from)"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        # gzip reports a cut-off or damaged archive as EOFError/BadGzipFile.
        raise DataError(f"{path}: cannot read ({exc}); {fix}") from exc

    if len(data) < 4:
        raise DataError(f"{path}: truncated, only {len(data)} bytes, no IDX header; {fix}")
    zero0, zero1, dtype_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{path}: wrong magic number {data[:4].hex()} (an IDX file starts with "
            f"two zero bytes); not an IDX file, or a compressed file without a .gz "
            f"suffix; {fix}"
        )
    if dtype_code != _IDX_UBYTE:
        raise DataError(
            f"{path}: IDX type code 0x{dtype_code:02x}, expected 0x08 (unsigned byte); {fix}"
        )
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; {fix}")

    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated inside the header; {fix}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(data) - header_size
    if actual < expected:
        raise DataError(
            f"{path}: truncated, header {dims} needs {expected} bytes of data but "
            f"the file has {actual}; {fix}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} unexpected bytes after the data declared by "
            f"header {dims}; {fix}"
        )
    # Copy so the array owns writable memory (frombuffer over bytes is read-only,
    # which torch.from_numpy warns about).
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped if the name ends in .gz."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


# --------------------------------------------------------------------------
# Finding the files
