"""CRC-32C (Castagnoli): the checksum Secret Manager gives with a payload (`dataCrc32c`).

The local backend sends it; the client checks it on every read, so a payload damaged
on the way (or by a proxy) is an error, not a wrong secret.
"""

from __future__ import annotations

from functools import cache


@cache
def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c(data: bytes) -> int:
    table = _table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
