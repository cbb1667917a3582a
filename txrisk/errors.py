"""The exception root of txrisk.

Errors a user can act on (a bad flag, file, spec or bundle) derive from
`UserError`: the command-line entry points print their message as one line and
exit non-zero instead of showing a traceback.
"""


class TxriskError(Exception):
    """Root of every error raised by txrisk."""


class UserError(TxriskError):
    """Something the user can fix: the message names what, the value and the fix."""


class SpecError(UserError):
    """A feature spec file is missing, unreadable or inconsistent."""


class DataError(UserError):
    """A data file does not match its feature spec or cannot be trained on."""


class BundleError(UserError):
    """A model bundle is missing, tampered with or cannot be served."""
