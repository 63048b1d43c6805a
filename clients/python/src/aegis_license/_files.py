"""Cache files: written atomically (temp file, fsync, rename, 0600) and read only when
nobody else could have written them."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Union

from .errors import InsecureCacheError

PathLike = Union[str, "os.PathLike[str]"]


def ensure_private_dir(path: Path) -> None:
    """Creates ``path`` (0700) if absent; refuses one others may write."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise InsecureCacheError(f"cache directory {path} is writable by others or not owned by this user")


def atomic_write(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data``: a reader sees the old file or the new one, never a part."""
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(str(path.parent), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_private(path: Path) -> Optional[bytes]:
    """The file's bytes, None if absent; refuses a file others could have written."""
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise InsecureCacheError(f"cache file {path} cannot be opened safely: {err}") from err
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise InsecureCacheError(f"cache file {path} is not a regular file of this user, or others may write it")
        return f.read()
