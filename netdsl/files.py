"""Files a user asked for, written whole or not at all.

Every command and API call that writes a file (weights, outputs, an imported model, a picture, a report,
a formatted source) goes through ``write_atomically``: the bytes go to a temporary file next to the
target, which is renamed into place only once complete, with the usual mode (0666 less the umask).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import NetDSLError


def check_writable(path: str | Path, what: str = "file") -> Path:
    """``path``, once it can be a file: not a directory, in a directory that exists."""
    path = Path(path)
    if path.is_dir():
        raise NetDSLError(f"cannot write {what} `{path}`: it is a directory", hint="give a file name inside it")
    if not path.parent.is_dir():
        raise NetDSLError(f"cannot write {what} `{path}`: there is no directory `{path.parent}`",
                          hint="create the directory first, or write somewhere else")
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(path: str | Path, write: Callable[[str], None], what: str = "file") -> None:
    """Run ``write(temporary path)`` on a temporary file next to ``path``, then rename it into place with
    the usual mode (0666 less the umask); on any failure remove the temporary file and raise a
    NetDSLError — the target is either the old file or the whole new one, never part of one."""
    path = check_writable(path, what)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise NetDSLError(f"cannot write {what} `{path}`: {e.strerror or e}",
                          hint=f"check that you may write to `{path.parent}`") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, Exception) and not isinstance(e, NetDSLError):  # disk full, quota, a device error...
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise NetDSLError(f"cannot write {what} `{path}`: {reason}", hint="nothing was written; "
                              "check the free space and that you may write there") from None
        raise
