"""The error type every mobilekit command turns into a clear message and a non-zero exit."""


class MobilekitError(Exception):
    """A user-facing error: bad input, a file that does not fit, a failed check. Message names the culprit."""
