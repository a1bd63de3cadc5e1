"""The error types every mobilekit command turns into a clear message and a non-zero exit."""


class MobilekitError(Exception):
    """A user-facing error: bad input, a file that does not fit. Message names the culprit (exit status 2)."""


class CheckFailed(MobilekitError):
    """A check that ran and failed: parity, an XNNPACK load, a benchmark that measured nothing (exit status 1)."""
