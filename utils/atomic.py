"""The one atomic-write helper of the project: write beside the target, fsync, rename.

Every file or folder a tool writes (weights, converter output, config.json / label_map.json, TFRecords, exports,
reports, videos) goes through :func:`atomic_path` / :func:`atomic_file` / :func:`atomic_dir` (or, for a writer
that outlives one block, :func:`temporary_path` + :func:`commit_temporary` / :func:`discard_temporary`): the
target either keeps its previous content or gets the complete new one, never a half-written one, also when the
process is killed or the disk fills up. Temporaries are named ``.<name>.tmp-<random>`` beside the target, so that
:func:`remove_stale_temporaries` finds what a killed writer left and the next start removes it.

Usage::

    with atomic_file("run/config.json", "w") as f:      # text or binary file object
        json.dump(data, f)
    with atomic_path("run/model.weights.h5", suffix=".weights.h5") as tmp:  # writers that take a path (Keras
        model.save_weights(tmp)                                            # wants its own suffix)
    with atomic_dir("exports/coco", replace=True) as tmp:  # a whole folder, renamed into place when complete
        tf.saved_model.save(module, tmp)
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from typing import Iterator, List

TMP_MARK = ".tmp-"


class DiskFullError(OSError):
    """No space left while writing ``path`` (errno ENOSPC / EDQUOT); nothing was replaced."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing {path} (nothing was replaced)")
        self.path = path


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it wraps) is ENOSPC / EDQUOT; TensorFlow's writers report it as text only."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def file_mode() -> int:
    """0o666 without the process umask: what ``open(path, 'w')`` would create (mkstemp makes 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temporary_name(path: str, suffix: str = "") -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{TMP_MARK}{next(tempfile._get_candidate_names())}{suffix}")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
            _fsync_dir(root)
    else:
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[str]:
    """A temporary path beside ``path`` to write a FILE to (by any writer); when the block ends without an
    exception the file is fsynced and renamed onto ``path``, else it is removed and ``path`` is untouched.
    ``suffix`` ends the temporary's name, for writers that insist on one (Keras: ``".weights.h5"``).

    Raises:
      DiskFullError: the disk filled up (the temporary is removed, ``path`` untouched).
      FileNotFoundError: the writer left no file.
      whatever the block raises, after the clean-up.
    """
    path = os.fspath(path)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        commit_temporary(tmp, path)
    except BaseException as e:
        discard_temporary(tmp)
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise


def temporary_path(path, suffix: str = "") -> str:
    """The name of a new temporary FILE beside ``path`` (``.<name>.tmp-<random><suffix>``; its folder is created),
    for a writer whose lifetime is not one ``with`` block (utils/video.py's video writer): finish with
    :func:`commit_temporary` or :func:`discard_temporary`. Prefer :func:`atomic_path` where a block fits."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return _temporary_name(path, suffix)


def commit_temporary(tmp: str, path) -> None:
    """Fsync the complete file ``tmp`` (of :func:`temporary_path`) and rename it onto ``path``.

    Raises:
      FileNotFoundError: ``tmp`` does not exist (the writer left no file).
      OSError: the fsync / rename failed (``tmp`` is left for the caller to discard).
    """
    path = os.fspath(path)
    if not os.path.exists(tmp):
        raise FileNotFoundError(f"nothing was written to {path}")
    _fsync_tree(tmp)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def discard_temporary(tmp: str) -> None:
    """Remove the temporary ``tmp`` (file or folder) if it exists; the target is untouched."""
    _remove(tmp)


@contextlib.contextmanager
def atomic_file(path, mode: str = "w", encoding: str = "utf-8"):
    """``open()`` of a temporary file beside ``path`` (``mode`` 'w' or 'wb'), renamed onto ``path`` when the block
    ends without an exception (see :func:`atomic_path`)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file writes whole files: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_dir(path, replace: bool = False) -> Iterator[str]:
    """A temporary FOLDER beside ``path`` to fill; when the block ends without an exception it is fsynced and
    renamed to ``path``. An existing ``path`` is refused unless it is an empty folder or ``replace``: then it is
    renamed aside first and deleted only after the new folder is in place (put back if the rename fails).

    Raises:
      FileExistsError: ``path`` exists, is not an empty folder, and ``replace`` is False (checked first).
      DiskFullError, or whatever the block raises, after the temporary folder is removed.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)) and not replace:
        raise FileExistsError(f"{path} exists and is not empty")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _temporary_name(path)
    os.mkdir(tmp, 0o777)  # umask applies, as for any folder the user makes
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if os.path.lexists(path):
            if os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
            else:
                old = _temporary_name(path)
                os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            if old is not None:
                os.rename(old, path)  # put the previous one back
            raise
        _fsync_dir(os.path.dirname(path))
        if old is not None:
            _remove(old)
    except BaseException as e:
        _remove(tmp)
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise


def remove_stale_temporaries(folder) -> List[str]:
    """Remove the temporaries (``.<name>.tmp-*``) that a killed writer left in ``folder`` (not recursive); returns
    their paths. Call it when a tool starts writing into a folder it owns."""
    folder = os.fspath(folder)
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        if name.startswith(".") and TMP_MARK in name:
            _remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed


__all__ = ["TMP_MARK", "DiskFullError", "is_disk_full", "file_mode", "atomic_path", "temporary_path",
           "commit_temporary", "discard_temporary", "atomic_file", "write_text", "atomic_dir",
           "remove_stale_temporaries"]
