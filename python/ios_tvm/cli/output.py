"""The files the ``ios-tvm`` commands write (``-o``, ``--png``): checked before any work is done,
their missing folders created (and said) only when the file is written, and never written over
a file another process wrote in the meantime."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError, OutputFileError
from .progress import say


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is written: inode, modification time, size (``None``: absent)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass
class Output:
    """A file a command was asked to write.

    Attributes
    ----------
    path
        Where.
    flag
        The option that named it (``-o``, ``--png``), for messages.
    missing
        The first of its folders that does not exist yet (``None``: all do).
    before
        :func:`_identity` of the file when the command started.
    """

    path: Path
    flag: str
    missing: Path | None
    before: tuple[int, int, int] | None

    @classmethod
    def check(cls, path: str | None, default: str, flag: str = "-o") -> "Output":
        """Where ``flag`` writes (``path``, else ``default``), checked before any work is done:
        not a directory, and in a folder that exists or can be made and is writable.

        Raises
        ------
        InvalidArgumentError
            A directory, or a place that cannot be written.
        """
        out = Path(path or default)
        if out.is_dir():
            raise InvalidArgumentError(f"{flag} {out} is a directory: give a file name, e.g. {flag} {out / default}")
        parent, missing = out.parent, None
        while not parent.exists() and parent != parent.parent:
            parent, missing = parent.parent, parent
        if not parent.is_dir():
            raise InvalidArgumentError(f"{flag} {out}: {parent} is a file, not a folder; write {out.name} elsewhere")
        if not os.access(parent, os.W_OK):
            raise InvalidArgumentError(f"{flag} {out}: cannot write in {parent} (read-only, or not yours); write it "
                                       "elsewhere")
        return cls(out, flag, missing, _identity(out))

    def ready(self) -> Path:
        """Just before writing: refuse if another process wrote the file since the command
        started, create the missing folders (saying so). Returns :attr:`path`.

        Raises
        ------
        OutputFileError
            The file changed since the command started, or a folder cannot be made.
        """
        if _identity(self.path) != self.before:
            raise OutputFileError(
                f"{self.flag} {self.path} was written by another process while this command ran (two commands "
                f"writing one file?): it is left as that one wrote it, and this command's result is not written; "
                f"run it again with another {self.flag}")
        if self.missing is not None and not self.path.parent.exists():
            say(f"creating the folder {self.path.parent} for {self.flag} {self.path.name}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputFileError(f"{self.flag} {self.path}: cannot create the folder {self.path.parent} "
                                      f"({err.strerror or err}); write it elsewhere") from None
        return self.path
