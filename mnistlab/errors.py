"""Typed errors. The library raises these; the CLI turns them into one line and an exit code.

A user mistake (bad path, bad file, bad argument) is a ``MnistlabError``: its message is one line that
says what is wrong and where. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class MnistlabError(Exception):
    """Base class for every error caused by the user's input or environment."""

    exit_code = 2


class ConfigError(MnistlabError, ValueError):
    """An argument or setting is out of range or unknown."""


class DatasetError(MnistlabError):
    """A data set is missing, corrupt, or not what it claims to be."""


class DownloadError(DatasetError):
    """Every mirror failed; the message lists what was tried and how to place files by hand."""


class CheckpointError(MnistlabError):
    """A checkpoint or run folder is missing, truncated, tampered with, or incompatible."""


class ExportError(MnistlabError):
    """An export could not be written or read back."""


class ImageError(MnistlabError):
    """An input image cannot be read or holds nothing to recognise."""


class EmptyImageError(ImageError):
    """An image that was read fine but shows nothing to recognise (a blank canvas, a photo of paper)."""


class DistributedError(MnistlabError):
    """A multi-process run cannot start (bad world size, port in use) or one of its processes failed."""


# An OSError with one of these is the machine's fault, not a bug (disk full, read-only, permission denied):
# the CLI and the library report it in one line naming the path.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE,
                                errno.ENFILE, errno.ENOMEM, errno.EIO})  # fmt: skip
