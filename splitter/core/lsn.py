"""Log sequence numbers: PostgreSQL's `X/Y` text form to and from the integer splitter computes with.

Owns: the one parser and formatter of LSNs (operators type them, the change log and the state tables
carry them).  Must not: know where an LSN came from.
"""

from __future__ import annotations

import re

from splitter.core.errors import ConfigurationError

_MAX_LSN = (1 << 64) - 1
_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def lsn_to_str(lsn: int) -> str:
    """Format an LSN as PostgreSQL does (``16/B374D848``)."""
    if not 0 <= lsn <= _MAX_LSN:
        raise ValueError(f"LSN {lsn} is outside 0..2^64-1")
    return f"{lsn >> 32:X}/{lsn & 0xFFFF_FFFF:X}"


def str_to_lsn(text: str) -> int:
    """Parse ``X/Y`` (hex, as printed by PostgreSQL); operators type these, so errors name the text."""
    match = _LSN_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(f"not a PostgreSQL LSN (expected hex 'X/Y', e.g. '16/B374D848'): {text!r}")
    return int(match[1], 16) << 32 | int(match[2], 16)
