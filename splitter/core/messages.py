"""The logical messages splitter writes into the source's WAL (`pg_logical_emit_message`): every prefix.

Capture forwards every message whose prefix starts with `SPLITTER` into the change log (others are the
application's business and are dropped); workers act on the ones they know.  Owns: the prefixes, one
place.  Must not: encode or decode message bodies (their writers and readers own those).
"""

from __future__ import annotations

from typing import Final

#: What every splitter message's prefix starts with; capture drops other logical messages.
SPLITTER: Final = "splitter."
#: Capture's idle heartbeat (keeps the slot advancing while published tables are quiet).
HEARTBEAT: Final = "splitter.heartbeat"
#: An online backfill's low and high watermarks (non-transactional).
BACKFILL: Final = "splitter.backfill"
#: A cutover's marker: the position a worker is asked to hold at while the fence is up.
CUTOVER: Final = "splitter.cutover"
#: Ownership moves (non-transactional): from here on, whose writes of a shared table the source carries.
OWNERSHIP: Final = "splitter.ownership"
