"""The CRC-32C the Secret Manager subset reports with each payload."""

from piper_mcp.checksum import crc32c


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
