"""The one error path and exit-code table of every command-line tool.

Every tool's ``main`` raises :class:`UserError` (or a subclass) for anything the user can fix; :func:`run` turns it into
one line on stderr, ``<tool>: error: <message>``, and exit status :data:`EXIT_USER_ERROR`. Exit statuses:

======  ==========================================================================================
0       success
1       a fault at run time that stopped the job after saving what could be saved (e.g. data errors)
2       user error: a bad flag, input or file (nothing was written, or what was written is complete)
75      interrupted by SIGINT/SIGTERM after saving a checkpoint (``EX_TEMPFAIL``: resume with ``-resume``)
130     interrupted by SIGINT before anything was written (128 + signal number: nothing to resume; the
143     TFRecord creator); SIGTERM gives 143
======  ==========================================================================================

Flag convention of every tool: absl flags, defined inside a ``define_flags()`` / ``_define_flags()`` function that
the module calls under ``if __name__ == "__main__":`` (so that importing a tool as a library defines no flags), and
``utils.cli.run(main)`` instead of ``absl.app.run(main)``. A flag-parsing error (unknown flag, bad value, missing
required flag) is one line and exit 2, like any other user error.

A quiet start: :func:`quiet_startup` (first lines of a tool, before anything imports TensorFlow) hides TensorFlow's
C++ start-up lines; ``-verbose`` (or ``YOLACT_VERBOSE=1``) keeps them.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

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


def parse_flags(argv):
    """``absl.flags.FLAGS(argv)`` whose errors are one line and exit 2 (absl's own parser prints 'FATAL Flags
    parsing error' and a hint over two or more lines and exits 1). Returns the remaining arguments."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        fail(f"{text} (--helpfull lists the flags)", EXIT_USER_ERROR)


def run(main) -> None:
    """``absl.app.run(main)`` with the project's error path: the three exception types above become one line and
    their exit status, and so do flag-parsing errors (exit 2, see :func:`parse_flags`). ``--help`` / ``--helpfull``
    stay absl's (usage on stdout)."""
    from absl import app

    def wrapped(argv):
        from absl import flags, logging

        # absl turns its Python logging to INFO after parsing (TF's saver notes etc.): WARNING unless asked for
        if not verbose_requested() and not ("verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present):
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except (UserError, FaultError, Interrupted) as e:
            fail(str(e), e.exit_code)

    app.run(wrapped, flags_parser=parse_flags)


# ---------------------------------------------------------------------------------------------------------------
# A quiet start

VERBOSE_ENV = "YOLACT_VERBOSE"
_TRUE = ("1", "true", "t", "yes", "y")
# Lines of TensorFlow's C++ libraries while they load: absl's "before absl::InitializeLog()" notice, glog-style
# records ("I0000 00:00:1796125092.951330    6683 port.cc:153] ...") and the CPU-feature notice's second line.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow with the appropriate "
    r"compiler flags\.)\s*$")


def verbose_requested(argv=None) -> bool:
    """True when ``argv`` (default ``sys.argv``) holds ``-verbose`` / ``--verbose`` / ``--verbose=true`` before a
    ``--``, or the environment sets ``YOLACT_VERBOSE`` to 1/true/yes (``--noverbose`` / ``--verbose=false`` win
    over the environment)."""
    value = os.environ.get(VERBOSE_ENV, "").strip().lower() in _TRUE
    for arg in (sys.argv if argv is None else argv)[1:]:
        if arg == "--":
            break
        m = re.fullmatch(r"--?(no)?verbose(?:=(.*))?", arg)
        if m:
            value = m.group(1) is None and (m.group(2) is None or m.group(2).strip().lower() in _TRUE)
    return value


@contextlib.contextmanager
def _startup_noise_filtered(noise=_STARTUP_NOISE):
    """Route file descriptor 2 into a temporary file for the block, then write back every line that ``noise`` does
    not match (default: TensorFlow's C++ start-up noise; Python warnings and tracebacks printed meanwhile keep their
    order)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [ln for ln in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.match(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


# Lines native libraries print to file descriptor 2 while a tool works: OpenCV's log records ("[ WARN:0@0.012] global
# cap_v4l.cpp:914 open VIDEOIO(V4L2:/dev/video7): can't open camera by index"), the TFLite quantizer's settings line
# ("fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, ...") and LiteRT's delegate notice.
NATIVE_NOISE = re.compile(
    r"^(\[ ?(?:WARN|ERROR|INFO|DEBUG):\d+@[\d.]+\] .*"
    r"|fully_quantize: \d+, inference_type: .*"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)\s*$")


@contextlib.contextmanager
def native_noise_filtered(noise=NATIVE_NOISE):
    """Hide the lines of native libraries (:data:`NATIVE_NOISE`) that the block prints to stderr's file descriptor
    (every other line is written back at the end of the block); a no-op with ``-verbose`` / ``YOLACT_VERBOSE=1``.
    Wrap short calls only (opening a camera, a conversion): a progress bar inside would appear only at the end."""
    if verbose_requested():
        yield
        return
    with _startup_noise_filtered(noise):
        yield


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once (then leaves ``sys.meta_path``) and runs its import with the start-up noise
    filtered out of stderr: the lines are written by C++ static initializers while the shared libraries load, before
    ``TF_CPP_MIN_LOG_LEVEL`` is consulted, so only the file descriptor can hold them back."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet_exec_module(module):
                with _startup_noise_filtered():
                    exec_module(module)

            spec.loader.exec_module = quiet_exec_module
        return spec


def quiet_startup(module_name: str = "__main__", argv=None) -> bool:
    """Hide TensorFlow's C++ start-up lines unless ``-verbose`` / ``YOLACT_VERBOSE=1`` asks for them.

    Call it at the top of a tool, before anything imports TensorFlow: ``cli.quiet_startup(__name__)``. It acts only
    when ``module_name`` is ``"__main__"`` or ``"__mp_main__"`` (the tool re-imported by a multiprocessing spawn
    worker, which sees the same ``sys.argv``); importing the tool as a library changes nothing. It defines the absl
    flag ``-verbose`` (listed by ``--helpshort``). Quiet means, measured on TensorFlow 2.21 (CPU machine):

    * ``TF_CPP_MIN_LOG_LEVEL=3`` in the environment (set before TensorFlow loads; inherited by subprocesses): hides
      C++ INFO/WARNING/ERROR records after start-up, e.g. ``E0000 ... failed call to cuInit`` on a machine without
      GPU (the level 2 that scripts used to set still shows that ERROR line);
    * the import of ``tensorflow`` runs with stderr's file descriptor filtered: ``WARNING: All log messages before
      absl::InitializeLog() ...``, ``I0000 ... oneDNN custom operations are on ...``, ``I0000 ... cudart_stub ...``
      and the CPU-feature notice are printed while the libraries load, whatever ``TF_CPP_MIN_LOG_LEVEL`` says.
      Everything else printed meanwhile is written back.

    Numerics do not change: ``TF_ENABLE_ONEDNN_OPTS`` is left alone (oneDNN stays on) and no device is hidden.
    Verbose leaves the environment as it is (TensorFlow's default level 0 shows everything).

    Args:
      module_name: the caller's ``__name__``.
      argv: the command line (default ``sys.argv``), scanned for ``-verbose`` before absl parses it.

    Returns:
      True when the start is verbose (or ``module_name`` is not a main module), False when quiet.
    """
    if module_name not in ("__main__", "__mp_main__"):  # __mp_main__: the main module re-run by a spawned worker
        return True
    from absl import flags

    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, f"Show TensorFlow's C++ start-up and log lines (also {VERBOSE_ENV}=1).")
        if sys.argv and sys.argv[0]:  # absl's name of the main module: listed by --helpshort too
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["verbose"])
    if verbose_requested(argv):
        return True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    return False
