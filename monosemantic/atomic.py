"""Crash-safe writes: a reader sees the old file or the new one, never half of either.

- `atomic_write_bytes` / `atomic_write_text` / `atomic_write_json`: one file, via temp file + fsync +
  `os.replace`.
- `atomic_directory`: a whole directory (a checkpoint) built under a temporary name and renamed into
  place in one step.
- `fsync_dir`: make a rename durable.
- `os_error_message` / `WriteError`: a failed write (full disk, read-only directory) as one message
  that names the path and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from monosemantic.errors import MonosemanticError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # mkstemp/mkdtemp create 0600/0700; published files follow the umask


class WriteError(MonosemanticError, OSError):
    """A file or directory could not be written: the disk is full, the place is read-only, ..."""


FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error_message(e: OSError, path: str | os.PathLike | None = None) -> str:
    """`PATH: what happened; what to do` for an OSError (its own file name unless `path` is given)."""
    path = path if path is not None else e.filename
    where = f"{os.fsdecode(path)}: " if path is not None else ""
    what = e.strerror or str(e)
    if e.errno in FULL:
        return f"{where}cannot write ({what}): free some space on that disk, then run the command again"
    if e.errno in NOT_WRITABLE:
        return f"{where}cannot write ({what}): make it writable, or run the command on a writable copy"
    return f"{where}{what}"


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    """The error to raise when writing `path` failed with `e` (errno kept)."""
    error = WriteError(os_error_message(e, path))
    error.errno = e.errno
    return error


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry, so that a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` in one step; a failure (raised as `WriteError`) leaves `path` as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, MonosemanticError):
            raise write_error(path, e) from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_object(file: Path, error: type[Exception], advice: str = "") -> dict:
    """The JSON object in `file` (which exists); otherwise `error` naming the file, then `advice`."""
    then = f"; {advice}" if advice else ""
    try:
        data = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{file}: not valid JSON ({e}){then}") from e
    if not isinstance(data, dict):
        raise error(f"{file}: expected a JSON object, got {type(data).__name__}{then}")
    return data


def read_manifest_json(file: Path, fmt: str, error: type[Exception], missing: str, damaged: str = "") -> dict:
    """A JSON manifest whose "format" must be `fmt`; `error(missing)` when the file does not exist, and
    an error that ends with `damaged` (what to do) when it is not a JSON object of that format."""
    if not file.is_file():
        raise error(missing)
    manifest = read_json_object(file, error, damaged)
    if manifest.get("format") != fmt:
        then = f"; {damaged}" if damaged else ""
        raise error(f"{file}: format {manifest.get('format')!r}, expected {fmt!r}{then}")
    return manifest


def fsync_tree(path: Path) -> None:
    """fsync every file under `path`, then the directories, deepest first; files get the umask's
    permissions (some writers, e.g. safetensors' save_file, create them 0600)."""
    for root, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fchmod(fd, 0o666 & ~_UMASK)
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.old.tmp"


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it takes the place of `path`.

    A new `path` appears in one rename. An existing one is first renamed aside (to `.NAME.old.tmp`)
    and deleted only once the new one is in place; if the process dies between the two renames,
    `remove_stale_temporaries` puts the old one back. On an exception the temporary directory is
    removed and `path` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_UMASK)
    except OSError as e:
        raise write_error(path, e) from e
    old = None
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            old = _aside(path)
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)
        shutil.rmtree(tmp, ignore_errors=True)
        if _failed_write_in(tmp, e):
            raise write_error(path, e) from e
        raise
    if old is not None:
        shutil.rmtree(old)


def _failed_write_in(tmp: Path, e: BaseException) -> bool:
    """Whether `e` is a full disk or a read-only place met while filling `tmp` (not, say, an input
    file of the caller that could not be read)."""
    if not isinstance(e, OSError) or isinstance(e, MonosemanticError) or e.errno not in FULL | NOT_WRITABLE:
        return False
    return e.filename is None or Path(os.fsdecode(e.filename)).is_relative_to(tmp)


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Clear what interrupted writes left (`.NAME.*.tmp`), e.g. after a SIGKILL. A directory set
    aside by `atomic_directory` whose replacement never arrived is moved back to NAME."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        if entry.name.endswith(".old.tmp") and entry.is_dir():
            original = directory / entry.name[1 : -len(".old.tmp")]
            if not original.exists():
                os.replace(entry, original)
                continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
