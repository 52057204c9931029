"""Writing the files a user asked for: whole or not at all, with the permissions the user's umask
gives (a file replaced keeps its own), and a typed error, not a traceback, when the place cannot
be written."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..errors import OutputFileError

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and back, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(path: str | os.PathLike, executable: bool = False) -> int:
    """The permission bits a file written at ``path`` gets: those of the file it replaces, else
    what ``open(path, "w")`` would give (``0o666`` less the umask; ``0o777`` less the umask for
    an ``executable`` file, as a linker makes a shared library)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return (0o777 if executable else 0o666) & ~current_umask()


def write_atomically(path: str | os.PathLike, write: Callable[[str], object], executable: bool = False) -> Path:
    """Have ``write(tmp)`` write a temporary file beside ``path`` (same extension), then give it
    :func:`new_file_mode` and rename it over ``path``: readers see the old file or the new one,
    never half of one, and a failure leaves the old file as it was.

    Raises
    ------
    OutputFileError
        The folder or the file cannot be written (read-only, immutable, full), with the reason.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, new_file_mode(path, executable))
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputFileError(f"cannot write {path} ({err.strerror or err}): what was there is left as it was; "
                              f"write it elsewhere, or make {path.parent} and {path.name} writable") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path
