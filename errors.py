"""Named exceptions at the library boundary; the CLI maps each to a one-line message and an exit code.

Exit codes (documented in the README):
  0 success · 1 internal error · 2 usage error · 3 path or store not found ·
  4 store incompatible (newer schema, other fingerprint, damaged) · 5 some files could not be read ·
  73 store read-only (it can be searched, not indexed) · 74 disk full or failing ·
  69 a backend server (--backend, --embed-backend) could not be reached or refused (EX_UNAVAILABLE) ·
  75 store busy (another `kb index` holds the lock; EX_TEMPFAIL, retry later) ·
  130 interrupted · 141 output closed early (a broken pipe, as `kb query X | head -1`)
"""


class KbError(Exception):
    """Base of every error kb reports to a user."""

    exit_code = 1


class UsageError(KbError):
    exit_code = 2


class NotFound(KbError):
    exit_code = 3


class StoreIncompatible(KbError):
    exit_code = 4


class PartialFailure(KbError):
    """The run completed, but some files could not be read (their earlier index entries are kept)."""

    exit_code = 5


class StoreBusy(KbError):
    exit_code = 75


class StoreReadOnly(KbError):
    """The store's folder, database file or file system takes no writes (EX_CANTCREAT)."""

    exit_code = 73


class DiskFull(KbError):
    """The disk is full or failing (EX_IOERR); SQLite rolled the transaction back, nothing is lost."""

    exit_code = 74


class Unavailable(KbError):
    """An OpenAI-compatible server kb was pointed at could not be reached, or refused (EX_UNAVAILABLE)."""

    exit_code = 69
