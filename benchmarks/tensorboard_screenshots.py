"""Serve a training run's TensorBoard logs on 127.0.0.1 and screenshot them in headless Chromium.

Usage::

    .venv/bin/python benchmarks/tensorboard_screenshots.py -logdir quickstart_out/logs -out_dir /tmp/tb_shots

Needs Debian's ``chromium`` (``apt-get install chromium chromium-driver``). TensorBoard is started as a child
process on a free loopback port and stopped by its PID afterwards, whatever happens. Writes ``scalars.png``,
``images.png`` and ``time_series.png`` into ``-out_dir`` (keep them out of the repository) and prints the tags
TensorBoard reports over its HTTP API, so the check does not rest on the pictures alone. Exit status (utils/cli.py):
2 for a bad flag / missing chromium, 1 when TensorBoard or Chromium fail.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import cli  # noqa: E402

cli.quiet_startup(__name__)  # TF_CPP_MIN_LOG_LEVEL=3 also quiets the TensorBoard child process

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The tool's flags (called under ``__main__`` only, the project's convention: see utils/cli.py)."""
    flags.DEFINE_string("logdir", None, "TensorBoard log directory of a training run.")
    flags.DEFINE_string("out_dir", "/tmp/tensorboard_screenshots", "Where the PNG screenshots go (outside the repo).")
    flags.DEFINE_string("chromium", "", "Chromium binary; default: chromium or chromium-browser on PATH.")
    flags.DEFINE_integer("scalars_height", 1700, "Window height (px) for the scalars page (its 12 filtered charts).")
    flags.DEFINE_integer("timeout", 90, "Seconds to wait for TensorBoard to load the logs.")

_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=20000",
]


# One page of 12 charts: the four loss terms and their sum, lr, images/s, validation box and mask AP and AP50
# (a tag filter shows its matches expanded; without one TensorBoard collapses all but the first two sections).
SCALARS_FILTER = "^(loss/|lr$|images_per_second$|val/(box|mask)/AP(50)?$)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:  # loopback only
        return json.loads(r.read().decode())


def _wait_for_tags(base: str, timeout: float) -> dict:
    """Poll TensorBoard's API until the run's scalar tags appear; returns {plugin: {run: tags}}."""
    deadline = time.time() + timeout
    last_err = None
    while time.time() < deadline:
        try:
            scalars = _get_json(base + "/data/plugin/scalars/tags")
            if scalars:
                images = _get_json(base + "/data/plugin/images/tags")
                return {"scalars": scalars, "images": images}
        except Exception as e:  # not up yet
            last_err = e
        time.sleep(1.0)
    raise cli.FaultError(f"TensorBoard did not serve any scalar tags within {timeout}s ({last_err})")


def _screenshot(chromium: str, url: str, path: str, height: int = 1100) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        subprocess.run(
            [chromium, *_CHROMIUM_FLAGS, f"--window-size=1600,{height}", f"--user-data-dir={profile}",
             f"--screenshot={path}", url],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise cli.FaultError(f"chromium failed for {url}: {e}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if not os.path.exists(path):
        raise cli.FaultError(f"chromium wrote no screenshot for {url}")


def main(argv):
    if len(argv) > 1:
        raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.logdir or not os.path.isdir(FLAGS.logdir):
        raise cli.UserError(f"-logdir {FLAGS.logdir!r} is not a directory")
    chromium = FLAGS.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise cli.UserError("chromium not found (apt-get install chromium chromium-driver)")
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    port = _free_port()
    tb_bin = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    proc = subprocess.Popen(
        [tb_bin, "--logdir", FLAGS.logdir, "--host", "127.0.0.1", "--port", str(port), "--load_fast=false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    print(f"tensorboard pid {proc.pid} on http://127.0.0.1:{port}")
    try:
        base = f"http://127.0.0.1:{port}"
        tags = _wait_for_tags(base, FLAGS.timeout)
        for plugin, runs in tags.items():
            for run, run_tags in runs.items():
                print(f"{plugin} / {run}: {sorted(run_tags)}")
        pages = (("scalars", "#scalars&tagFilter=" + SCALARS_FILTER, FLAGS.scalars_height),
                 ("images", "#images", 1100), ("time_series", "#timeseries", 1100))
        for name, frag, height in pages:
            path = os.path.join(FLAGS.out_dir, f"{name}.png")
            _screenshot(chromium, f"{base}/{frag}", path, height)
            print(f"wrote {path}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        print(f"stopped tensorboard pid {proc.pid}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
