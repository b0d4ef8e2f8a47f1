"""utils/cli.py (quiet start, one-line flag errors) and the flag convention of the tools in scripts/ and benchmarks/.

Subprocesses run each tool as a user would; TensorFlow's start-up lines are the real ones of TF 2.21 on this machine.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from utils import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN|cuInit", re.M)
# Lines TensorFlow 2.21 printed while loading on this machine (TF_CPP_MIN_LOG_LEVEL=2), verbatim.
TF_STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796125092.951330    6683 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796125092.951606    6683 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796125092.997345    6683 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796125095.405218    6683 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]
TOOLS = {  # command -> the flags its --helpfull must list
    ("-m", "data.coco_tfrecord_creator"): ["train_image_dir", "train_annotations_file", "val_image_dir",
                                           "val_annotations_file", "output_dir", "num_shards", "num_workers",
                                           "strict", "verbose"],
    ("scripts/keep_used_categories.py",): ["out_dir", "annotations_files", "verbose"],
    ("-m", "benchmarks.input_pipeline"): ["records", "config", "batch_size", "batches", "verbose"],
    ("benchmarks/tensorboard_screenshots.py",): ["logdir", "out_dir", "chromium", "scalars_height", "timeout",
                                                 "verbose"],
}


def _py(*args, env=None, timeout=120):
    full = {k: v for k, v in os.environ.items() if k != cli.VERBOSE_ENV}
    full.update(TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full)


@pytest.mark.parametrize("argv, env, want", [
    (["t"], "", False),
    (["t", "-verbose"], "", True),
    (["t", "--verbose"], "", True),
    (["t", "--verbose=false"], "", False),
    (["t", "-verbose=1"], "", True),
    (["t", "-noverbose"], "1", False),
    (["t", "-x", "3"], "1", True),
    (["t", "-x", "3"], "yes", True),
    (["t", "-x", "3"], "0", False),
    (["t", "--", "-verbose"], "", False),
    (["t", "-verbose_x"], "", False),
])
def test_verbose_requested(monkeypatch, argv, env, want):
    monkeypatch.setenv(cli.VERBOSE_ENV, env)
    assert cli.verbose_requested(argv) is want


def test_quiet_startup_acts_only_in_a_main_module(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    meta_path = list(sys.meta_path)
    assert cli.quiet_startup("data.coco_tfrecord_creator", ["t"]) is True
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and sys.meta_path == meta_path


def test_startup_noise_filter_keeps_other_lines():
    code = (
        "import json, os, sys\n"
        "from utils import cli\n"
        "lines = json.loads(sys.argv[1])\n"
        "with cli._startup_noise_filtered():\n"
        "    os.write(2, ('\\n'.join(lines[:3]) + '\\nkeep: a Python warning\\n').encode())\n"
        "    print('keep: via sys.stderr', file=sys.stderr)\n"
        "    os.write(2, ('\\n'.join(lines[3:]) + '\\n').encode())\n"
        "print('after', file=sys.stderr)\n"
    )
    res = _py("-c", code, json.dumps(TF_STARTUP_LINES))
    assert res.returncode == 0, res.stderr
    assert res.stderr == "keep: a Python warning\nkeep: via sys.stderr\nafter\n"


def test_quiet_tensorflow_import_and_verbose():
    """A real TensorFlow import and op: quiet by default even with TF_CPP_MIN_LOG_LEVEL=2 (which shows them all
    without the helper), verbose with YOLACT_VERBOSE=1; oneDNN stays enabled either way."""
    code = (
        "import os, sys\n"
        "from utils import cli\n"
        "verbose = cli.quiet_startup('__main__')\n"
        "import tensorflow as tf\n"
        "x = tf.reduce_sum(tf.ones([4, 4]))\n"
        "print(verbose, float(x), os.environ.get('TF_ENABLE_ONEDNN_OPTS'), os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    quiet = _py("-c", code)
    assert quiet.returncode == 0 and quiet.stdout == "False 16.0 None 3\n"
    assert quiet.stderr == ""
    loud = _py("-c", code, env={cli.VERBOSE_ENV: "1"})
    assert loud.returncode == 0 and loud.stdout == "True 16.0 None 2\n"
    assert "oneDNN custom operations are on" in loud.stderr and "absl::InitializeLog" in loud.stderr


@pytest.mark.parametrize("tool", list(TOOLS), ids=lambda t: t[-1])
def test_flags_listed_and_flag_errors_one_line(tool):
    helpfull = _py(*tool, "--helpfull")
    listed = set(re.findall(r"^\s+--(?:\[no\])?(\w+):", helpfull.stdout, re.M))
    assert set(TOOLS[tool]) <= listed, helpfull.stdout[-2000:]
    assert not NOISE.search(helpfull.stderr)
    res = _py(*tool, "-no_such_flag=1")
    prog = tool[-1] if tool[0] == "-m" else os.path.basename(tool[0])
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"{prog}: error: Unknown command line flag 'no_such_flag' "
                                       "(--helpfull lists the flags)"]


def test_keep_used_categories(tmp_path):
    sample = ROOT / "samples" / "coco_mini" / "annotations"
    train, val = sample / "instances_train2017.json", sample / "instances_val2017.json"
    out = tmp_path / "ann"
    res = _py("scripts/keep_used_categories.py", "-out_dir", out, "-annotations_files", f"{train},{val}")
    assert res.returncode == 0, res.stderr
    src = {p.name: json.loads(p.read_text()) for p in (train, val)}
    used = sorted({a["category_id"] for a in src[train.name]["annotations"]})
    assert res.stdout.startswith(f"kept {len(used)} categories (") and res.stderr == ""
    for name, d in src.items():
        got = json.loads((out / name).read_text())
        assert [c["id"] for c in got["categories"]] == used
        assert got["categories"] == [c for c in d["categories"] if c["id"] in used]
        assert got["images"] == d["images"] and got["annotations"] == d["annotations"]
    # the val split's categories do not cover the train split's: one line, exit 2, nothing written
    res = _py("scripts/keep_used_categories.py", "-out_dir", tmp_path / "bad", "-annotations_files", f"{val},{train}")
    assert res.returncode == 2 and not (tmp_path / "bad").exists()
    missing = sorted({a["category_id"] for a in src[train.name]["annotations"]}
                     - {a["category_id"] for a in src[val.name]["annotations"]})
    assert res.stderr.splitlines() == [f"keep_used_categories.py: error: {train} has annotations of categories "
                                       f"{missing} absent from {val}"]
