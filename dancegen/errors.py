"""Errors with a message meant for the user: each says what was expected and where."""


class DancegenError(Exception):
    """Base class; the CLI prints these as one line instead of a traceback."""


class ConfigError(DancegenError):
    """A configuration file or override is invalid."""


class InputError(DancegenError):
    """An input file (motion pickle, music, camera) is missing, corrupt or malformed.

    Deterministic: retrying cannot help, so the unit that hit it fails at once and is recorded.
    """


class StoreError(DancegenError):
    """The dataset store is unreachable, or does not hold what the data contract requires."""


class UnitTimeout(DancegenError):
    """A unit of work ran past its stage's ``timeout_s``; its worker was stopped."""
