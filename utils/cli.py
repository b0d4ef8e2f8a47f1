"""The one error path and exit-code table of every command-line tool.

Every tool's ``main`` raises :class:`UserError` (or a subclass) for anything the user can fix; :func:`run` turns it into
one line on stderr, ``<tool>: error: <message>``, and exit status :data:`EXIT_USER_ERROR`. Exit statuses:

======  ==========================================================================================
0       success
1       a fault at run time that stopped the job after saving what could be saved (e.g. data errors)
2       user error: a bad flag, input or file (nothing was written, or what was written is complete)
75      interrupted by SIGINT/SIGTERM after saving a checkpoint (``EX_TEMPFAIL``: resume with ``-resume``)
======  ==========================================================================================
"""

from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 75


class UserError(Exception):
    """A problem the user can fix (bad flag, missing or unusable input): printed as one line, exit 2."""

    exit_code = EXIT_USER_ERROR


class FaultError(Exception):
    """A run-time fault that stopped the job after saving what could be saved: one line, exit 1."""

    exit_code = EXIT_FAULT


class Interrupted(Exception):
    """The job was interrupted by a signal after saving: one line, exit 75."""

    exit_code = EXIT_INTERRUPTED


def prog_name() -> str:
    """The tool's name as the user typed it (``train.py``, ``data.coco_tfrecord_creator``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "yolact"


def fail(message: str, code: int = EXIT_USER_ERROR) -> "NoReturn":  # noqa: F821
    """Print ``<tool>: error: <message>`` (first line only) to stderr and exit with ``code``."""
    first = str(message).strip().splitlines()[0] if str(message).strip() else "unknown error"
    print(f"{prog_name()}: error: {first}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(main) -> None:
    """``absl.app.run(main)`` with the project's error path: the three exception types above become one line and
    their exit status; flag-parsing errors stay absl's (one usage line, exit 1 — absl's own convention)."""
    from absl import app

    def wrapped(argv):
        try:
            return main(argv)
        except (UserError, FaultError, Interrupted) as e:
            fail(str(e), e.exit_code)

    app.run(wrapped)
