"""One writer per run folder: an exclusive ``flock`` on ``RUN/.lock``, held for the whole run.

The lock is the kernel's ``flock`` on the open file, not the file's existence: the OS releases it when the holder
exits in any way (also SIGKILL or a crash), so a lock left by a dead process is stale by construction and the next
writer simply takes it (no pid check, no timeout). The file holds ``pid <pid> host <host> since <time>`` of the
holder, for the error message of a refused writer. On release the holder removes the file; a writer that opened
the file just before it was removed notices (another inode at the path) and opens it again, so two writers never
hold locks on different files. ``flock`` is advisory and local: the folder must not be shared by two machines over
NFS (each would get its own lock).

Usage::

    with RunLock("weights/coco"):       # RunLockedError (a UserError: one line, exit 2) when held elsewhere
        train(...)
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket

from utils.cli import UserError

LOCK_FILENAME = ".lock"


class RunLockedError(UserError):
    """The run folder is being written by another live process (one line, exit 2)."""


class RunLock:
    """An exclusive lock on ``folder`` (see the module docstring); a context manager.

    Args:
      folder: the run folder; created by :meth:`acquire` if missing (and removed again by :meth:`release` when it
        is still empty: a run refused later leaves nothing behind).
    """

    def __init__(self, folder):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, LOCK_FILENAME)
        self.fd = None
        self._created_folder = False

    def acquire(self) -> "RunLock":
        """Take the lock or fail at once.

        Raises:
          RunLockedError: another process holds it (the message names its pid and host).
          OSError: the folder cannot be created or the lock file opened (unwritable location).
        """
        if self.fd is not None:
            return self
        self._created_folder = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
                finally:
                    os.close(fd)
                raise RunLockedError(f"{self.folder} is in use by another training run ({holder}): wait for it to "
                                     "end, or train into another -name") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file meanwhile: lock the new one
        self.fd = fd
        text = f"pid {os.getpid()} host {socket.gethostname()} since {datetime.datetime.now().isoformat('T', 'seconds')}\n"
        try:  # informative only (the flock is the lock): a full disk must not stop the run here
            os.ftruncate(fd, 0)
            os.pwrite(fd, text.encode(), 0)
        except OSError:
            pass
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent); remove the folder if this lock created it and
        it is empty."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
        if self._created_folder:
            try:
                os.rmdir(self.folder)  # only when empty
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["LOCK_FILENAME", "RunLock", "RunLockedError"]
