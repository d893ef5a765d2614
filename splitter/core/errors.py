"""The error hierarchy every part of splitter raises, and SQLSTATE classification.

Owns: the three kinds of failure an operator must tell apart (bad configuration, a
transient fault worth retrying, a fatal fault that needs a person) and the mapping from
PostgreSQL SQLSTATE classes to them.  Must not: match on error message text, or carry
secrets (DSNs are masked by `splitter.dsn` before they reach a message).
"""

from __future__ import annotations


class SplitterError(Exception):
    """Base of every error splitter raises on purpose."""


class ConfigurationError(SplitterError):
    """The user's input is wrong (topology, DSN, options, schema): fix it and run again."""


class RetryableError(SplitterError):
    """A transient fault (connection lost, serialization failure, broker down): retry with backoff."""


class FatalError(SplitterError):
    """A fault that retrying cannot fix and that needs an operator (slot lost, data rejected)."""


class DataRejectedError(FatalError):
    """A service database refused a change (SQLSTATE class 22 data exception or 23 integrity violation)."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


# SQLSTATE classes meaning "this row's data is not acceptable here": the row, not the system, is at fault.
DATA_REJECTION_CLASSES = frozenset({"22", "23"})


def is_data_rejection(sqlstate: str | None) -> bool:
    return bool(sqlstate) and sqlstate[:2] in DATA_REJECTION_CLASSES  # type: ignore[index]


class MalformedMessageError(FatalError):
    """Bytes on the wire do not follow the protocol or envelope they claim to."""


# SQLSTATE classes (first two characters) that a retry can cure.
_RETRYABLE_CLASSES = frozenset({"08", "53", "57", "58", "40"})
# Specific codes inside other classes that are transient.
_RETRYABLE_CODES = frozenset({"55P03", "55006"})  # lock_not_available, object_in_use
# Classes that mean the user's setup is wrong.
_CONFIGURATION_CLASSES = frozenset({"28", "3D", "3F", "42"})
# Individual codes in class 57 that are not transient: admin shutdown is, query_canceled is.
_CONFIGURATION_CODES = frozenset({"42501"})


def classify_sqlstate(sqlstate: str | None) -> type[SplitterError]:
    """Return the splitter error class for a PostgreSQL SQLSTATE (None: connection-level failure)."""
    if not sqlstate:
        return RetryableError
    if sqlstate in _RETRYABLE_CODES:
        return RetryableError
    if sqlstate in _CONFIGURATION_CODES:
        return ConfigurationError
    klass = sqlstate[:2]
    if klass in _RETRYABLE_CLASSES:
        return RetryableError
    if klass in _CONFIGURATION_CLASSES:
        return ConfigurationError
    return FatalError
