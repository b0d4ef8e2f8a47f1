"""An output is never an input: the one check every tool runs on its output paths before it loads anything.

``check_output_not_input(output, inputs)`` refuses an output path that IS one of the inputs, CONTAINS one (an output
folder above an input: replacing or filling it would touch the input) or LIES INSIDE one (an output inside an input
folder being read, e.g. an image folder; callers may allow it for a run folder). Paths are compared after ``os.path.realpath`` (symlinks
and ``..`` resolved), so two spellings of one file are one file; an output that does not exist yet is resolved
through its nearest existing parent.
"""

from __future__ import annotations

import os
from typing import Collection, Iterable, Optional, Tuple

from utils.cli import UserError


class OutputIsInputError(UserError):
    """An output path that is, contains or lies inside an input (one line naming both; nothing written)."""


def _real(path) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _relation(output: str, inp: str) -> Optional[str]:
    if output == inp:
        return "is"
    if inp.startswith(output.rstrip(os.sep) + os.sep):
        return "contains"
    if output.startswith(inp.rstrip(os.sep) + os.sep):
        return "lies inside"
    return None


def check_output_not_input(output, inputs: Iterable[Tuple[str, object]], output_flag: str = "output",
                           inside_ok: Collection[str] = ()) -> None:
    """Refuse ``output`` when it is, contains or lies inside one of ``inputs``.

    Args:
      output: the output path (file or folder; need not exist).
      inputs: ``(what, path)`` pairs, e.g. ``("-checkpoint", "runs/a")``; None paths are ignored.
      output_flag: how the output is named in the message, e.g. ``"-export_dir"``.
      inside_ok: the ``what`` of inputs that an output may lie inside (a new file in a run folder harms nothing;
        the run folder itself, or a folder above it, must never be an output).

    Raises:
      OutputIsInputError: one line, e.g. ``-export_dir runs/a is the input -checkpoint runs/a: choose another path``.
    """
    if output is None:
        return
    real_out = _real(output)
    for what, path in inputs:
        if path is None:
            continue
        relation = _relation(real_out, _real(path))
        if relation and not (relation == "lies inside" and what in inside_ok):
            raise OutputIsInputError(f"{output_flag} {output} {relation} the input {what} {path}: an output is never "
                                     "an input, choose another path")


__all__ = ["OutputIsInputError", "check_output_not_input"]
