"""Exception classes shared by every stage.

They live in `edge` because every package may import it (imports flow
fod -> training -> calibration -> edge) and it imports none of them.
"""

from __future__ import annotations


class FodError(Exception):
    """A user-facing error: bad input, a missing file, a wrong configuration.

    The CLI prints its message as one line and exits with code 2; anything else
    is a bug and keeps its traceback.
    """


class DataError(FodError):
    """A data set, image or annotation file is missing, malformed or inconsistent."""


class GpioError(FodError):
    """A pin factory or device could not be set up or driven."""
