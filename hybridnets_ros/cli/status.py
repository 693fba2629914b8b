"""Exit statuses and the error every command reports without a traceback. Apart from
common.py so that ``hybridnets launch`` loads neither torch nor the network's libraries."""
from __future__ import annotations

# Exit statuses, the same in every command.
EXIT_OK = 0            # done: every input read
EXIT_FAILED = 1        # an input failed (infer: a file; fleet: a bag; replay: no frame done)
EXIT_USAGE = 2         # bad options or set-up (no such bag, weights, --out unwritable or
#                        full: fleet stops there): nothing done
EXIT_DAMAGED = 3       # a damaged bag, read as far as it could be (what was lost is told)
EXIT_BUSY = 4          # fleet: another run holds the output folder (nothing done)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT); replay and fleet keep what was done
EXIT_STATUSES = ((EXIT_OK, "done"),
                 (EXIT_FAILED, "an input failed (launch: a process it started failed)"),
                 (EXIT_USAGE, "bad options or set-up"),
                 (EXIT_DAMAGED, "a damaged bag, read as far as it could be"),
                 (EXIT_BUSY, "another fleet run holds the output folder"),
                 (EXIT_INTERRUPTED, "interrupted"))
EXIT_STATUS_HELP = "exit status: " + "; ".join(f"{code} {what}" for code, what in EXIT_STATUSES)


class CliError(Exception):
    """A problem with the command line or set-up; printed without a trace, exit status
    ``status`` (EXIT_USAGE unless the problem is another: a bag with nothing readable)."""

    def __init__(self, message: str, status: int = EXIT_USAGE):
        super().__init__(message)
        self.status = status
