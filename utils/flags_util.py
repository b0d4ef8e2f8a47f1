"""Small helpers for the absl CLIs: safe arithmetic for numeric flags such as ``-weight_decay '5 * 1e-4'``."""

from __future__ import annotations

import re

from absl import flags

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(rf"\s*(?:(?P<num>{_NUMBER})|(?P<op>[*/]))")


def parse_number(text) -> float:
    """Evaluate a product/quotient of decimal numbers, left to right, without ``eval``.

    Accepts e.g. ``"5e-4"``, ``"5 * 1e-4"``, ``"1/3"``, ``"2 * 3 / 4"``; ints and floats pass through.

    Raises:
      ValueError: anything else (names, ``+``/``-`` between numbers, parentheses, ``**``, empty text, / 0), with
        a one-line message.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text)
    pos, value, op, expect_number = 0, None, None, True
    while pos < len(s):
        if s[pos:].strip() == "":
            break
        m = _TOKEN.match(s, pos)
        if m is None or (expect_number and m.group("num") is None) or (not expect_number and m.group("op") is None):
            raise ValueError(f"cannot parse {s!r} as a number: use numbers joined by * or / (e.g. '5 * 1e-4')")
        if expect_number:
            x = float(m.group("num"))
            if value is None:
                value = x
            elif op == "*":
                value *= x
            else:
                if x == 0:
                    raise ValueError(f"cannot parse {s!r} as a number: division by zero")
                value /= x
        else:
            op = m.group("op")
        expect_number = not expect_number
        pos = m.end()
    if value is None or expect_number:
        raise ValueError(f"cannot parse {s!r} as a number: use numbers joined by * or / (e.g. '5 * 1e-4')")
    return value


class ArithmeticParser(flags.ArgumentParser):
    """absl parser for float flags written as ``'5 * 1e-4'``."""

    def parse(self, argument):
        return parse_number(argument)

    def flag_type(self):
        return "float expression"


def DEFINE_number(name, default, help, flag_values=flags.FLAGS, **kwargs):  # noqa: N802 (absl naming)
    """A float flag that accepts ``a * b / c`` expressions (see :func:`parse_number`)."""
    flags.DEFINE(ArithmeticParser(), name, default, help, flag_values=flag_values,
                 serializer=flags.ArgumentSerializer(), **kwargs)


class ImgSizeParser(flags.ArgumentParser):
    """absl parser for ``-img_size``: ``S`` (square) or ``HxW`` (e.g. ``384x672``) → int S or a tuple (H, W)
    (config.py ``parse_img_size``; a malformed value is absl's one-line flag error).

    Args:
      check_min: also refuse sides below ``config.MIN_IMG_SIDE`` (64) here; train.py checks that with its other
        options instead (yolact/training/options.py ``validate_options``).
    """

    def __init__(self, check_min: bool = False):
        super().__init__()
        self.check_min = check_min

    def parse(self, argument):
        from config import check_min_img_size, parse_img_size

        value = parse_img_size(argument)
        if self.check_min:
            check_min_img_size(value, "-img_size")
        return value

    def flag_type(self):
        return "S or HxW"


class ImgSizeSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        from config import format_img_size

        return format_img_size(value)


def DEFINE_img_size(name, default, help, flag_values=flags.FLAGS, check_min: bool = False,  # noqa: N802
                    **kwargs):
    """An input-size flag taking ``S`` or ``HxW`` (see :class:`ImgSizeParser`)."""
    flags.DEFINE(ImgSizeParser(check_min), name, default, help, flag_values=flag_values,
                 serializer=ImgSizeSerializer(), **kwargs)


__all__ = ["parse_number", "DEFINE_number", "ArithmeticParser", "ImgSizeParser", "DEFINE_img_size"]


def define_model_flags(flag_values=flags.FLAGS, checkpoint_help: str | None = None) -> None:
    """The flags every tool that loads a model shares: ``-checkpoint`` and the three it normally does not need,
    ``-config``, ``-img_size``, ``-label_map`` (read from the checkpoint folder's config.json / label_map.json;
    given explicitly they must agree with it, see yolact/checkpoint.py resolve_run)."""
    flags.DEFINE_string("checkpoint", None, checkpoint_help or (
        "trained model: a run folder (config.json, label_map.json, checkpoints), a checkpoint prefix or a "
        ".weights.h5 in such a folder"), flag_values=flag_values)
    flags.DEFINE_string("config", None, "config preset (config.py); only for a checkpoint without config.json, "
                        "otherwise it must match the saved one", flag_values=flag_values)
    DEFINE_img_size("img_size", None, "input size S or HxW (e.g. 384x672); only for a checkpoint without "
                    "config.json (anchor scales rescaled), otherwise it must match the saved one",
                    flag_values=flag_values, check_min=True)
    flags.DEFINE_string("label_map", None, "label_map.json; only for a checkpoint without one (default: COCO's 80 "
                        "classes for 81-class models), otherwise it must match the saved one", flag_values=flag_values)
