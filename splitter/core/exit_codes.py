"""The exit codes of every `splitter` command and process: the one table (README "Exit codes" shows it).

Owns: the numbers and what each means.  Must not: decide which applies (the command or the supervisor
does).  It sits in core, not in cli/, because the supervisor in pipeline/ reads its children's codes too.
A command whose codes mean something of their own names them here with the number of the general
table they share (`splitter status`: LAGGING is 1, UNREACHABLE is 3).
"""

from __future__ import annotations

from typing import Final

OK: Final = 0  # done; for verify: nothing differs; for status: every service streams within --max-lag
DIFFERENT: Final = 1  # verify found differences; dlq/replay: not confirmed, or the worker did not answer
CONFIG: Final = 2  # a usage or configuration error: fix the command line, topology or environment
FATAL: Final = 3  # a fault no retry can fix (data rejected, lost position, ...); the message says what
REFUSED: Final = 4  # cutover/rollback/complete: a precondition does not hold; nothing was changed
ABORTED: Final = 5  # a fence was taken and lifted again; writes go where they went before
INCOMPLETE: Final = 6  # switched, but the reverse stream is not confirmed yet: run the command again
INTERRUPTED: Final = 130  # Ctrl-C

# `splitter status` (splitter.ops.status_verdict decides which).
LAGGING: Final = DIFFERENT  # a service is behind by more than --max-lag, stalled or not caught up yet
UNREACHABLE: Final = FATAL  # a database cannot be read (down, wrong password, ...), or a component stopped

#: name → code, for documentation and tests (the general table; LAGGING and UNREACHABLE share its numbers).
TABLE: Final = {"OK": OK, "DIFFERENT": DIFFERENT, "CONFIG": CONFIG, "FATAL": FATAL, "REFUSED": REFUSED,
                "ABORTED": ABORTED, "INCOMPLETE": INCOMPLETE, "INTERRUPTED": INTERRUPTED}
#: `splitter status`'s codes: name → code.
STATUS_TABLE: Final = {"OK": OK, "LAGGING": LAGGING, "CONFIG": CONFIG, "UNREACHABLE": UNREACHABLE,
                       "INTERRUPTED": INTERRUPTED}
