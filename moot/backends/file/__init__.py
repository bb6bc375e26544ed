"""``file:///path/to/dir``: processes on one host coordinate through a directory
(see :mod:`moot.backends.file.backend`)."""

from moot.backends.file.backend import FileBackend

__all__ = ["FileBackend"]
