"""Exceptions of the model package.

Every error a user can cause (bad input, bad model file) is one of these, with a
message that names the file or series at fault; the CLI prints it as one line
and exits non-zero, the service records it as a job's failure reason.
"""


class CmbError(Exception):
    """Base class of every expected, user-facing failure."""

    exit_code = 1


class InputError(CmbError):
    """Input that cannot be read at all (missing path, not DICOM, truncated file)."""

    exit_code = 2


class GeometryError(CmbError):
    """A series whose slices do not form one regular 3D grid."""

    exit_code = 3


class NoUsableSeriesError(CmbError):
    """A study without a GRE/SWI magnitude series to analyse."""

    exit_code = 4


class ModelError(CmbError):
    """A model file that is missing, unreadable or lacks required metadata."""

    exit_code = 5
