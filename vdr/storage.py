"""How a page's multi-vectors are kept on disk: the `storage` setting of an index.

    float32  4 bytes a value, exact (the default).
    float16  2 bytes a value; scores move by ~1e-4 (relative).
    int8     1 byte a value: Qdrant's 8-bit TurboQuant storage (a fixed random rotation, then
             one byte per coordinate), scored by Qdrant against the float query as it stands.
    binary   float32 on disk plus a 1-bit copy of every value held in RAM: Qdrant scores the
             bits first and rescores the best RESCORE_OVERSAMPLING x limit with the floats.

Every option applies to the three multi-vectors of a page (full, rows, cols) alike.

Why these and not the others Qdrant offers (measured with qdrant-edge-py 0.9.0, 200 pages of
300 x 128 unit vectors, 20-token queries):
- the Uint8 datatype converts the *query* to bytes too (negative values clip to 0), so MaxSim
  on real embeddings returns nonsense (all scores 0 on that set);
- scalar (int8) *quantization* keeps the float32 originals on disk beside the bytes: RAM
  shrinks, disk grows. TurboQuant 8-bit stores only the bytes: segments 130 MB instead of 503 MB
  for 1,000 pages of 1,030 x 128 (3.9x), top-10 unchanged on that set, max score error 0.007.
"""

from __future__ import annotations

from vdr.errors import VdrError

STORAGES = ("float32", "float16", "int8", "binary")
DEFAULT_STORAGE = "float32"
# Options whose stored values differ from the ones written (binary keeps the float32 originals).
LOSSY_STORAGES = ("float16", "int8")
# Binary storage rescored this many times the wanted pages with the float32 originals.
RESCORE_OVERSAMPLING = 4.0


def check_storage(storage: str) -> str:
    if storage not in STORAGES:
        raise VdrError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    return storage


# Qdrant's datatype (as its configurations spell it) for the options that change it.
_DATATYPES = {"float16": "float16", "int8": "turbo8"}


def datatype_name(storage: str) -> str:
    """The Qdrant vector datatype that holds `storage`'s values on disk."""
    return _DATATYPES.get(storage, "float32")


def storage_of(datatype: str | None, quantized: bool) -> str:
    """The storage option of a collection whose full vector has this Qdrant `datatype` (None
    for float32, as older configurations leave it out) and is binary-quantized or not."""
    if quantized:
        return "binary"
    name = str(datatype or "float32").lower()
    return next((s for s, d in _DATATYPES.items() if d == name), DEFAULT_STORAGE)
