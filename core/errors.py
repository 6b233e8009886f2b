"""User-facing errors.

Every mistake a user can make (a malformed file, a config typo, a corrupt
checkpoint) is raised as a ``UserError`` whose message is one line naming the
file and the field. The command-line interface prints that line and exits
non-zero instead of showing a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback.

    ``public`` is the same problem said without any private value (no cell value, no row number):
    what a site may send across the network. It defaults to the message itself, for messages that
    name only files, columns and public settings.
    """

    def __init__(self, message: str, public: str | None = None) -> None:
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))
        self.public = " ".join(str(public).split()) if public is not None else str(self)


class SchemaError(UserError):
    """The public schema file is malformed or inconsistent."""


class DataError(UserError):
    """A data table does not match its schema."""


class ConfigError(UserError):
    """A run configuration value is unknown or invalid."""


class CheckpointError(UserError):
    """A checkpoint file is missing, corrupt or does not fit the schema."""
