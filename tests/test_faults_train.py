"""Training faults (issue 13): data that cannot feed training, corrupt records, bad flags, interruption.

Every dataset here is made from the real records of tests/test_train.py (the first 8 coco2017_mini train images,
2 shards) by rewriting their ``tf.train.Example``s: crowd-only objects, undecodable images, a corrupted shard.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.test_train import _opts, records  # noqa: F401  (session fixture: 8 real records in 2 shards)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CROWD = "image/object/is_crowd"


def _examples(folder):
    files = sorted(folder.glob("train-*.tfrecord"))
    return [[tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(f))] for f in files]


def _write_variant(src, dst, edit):
    """Copy the dataset folder ``src`` (label_map.json, shards) to ``dst`` with ``edit(shard, index, example)``
    applied to every example (it changes the example in place)."""
    dst.mkdir(parents=True)
    shutil.copy(src / "label_map.json", dst / "label_map.json")
    for s, shard in enumerate(_examples(src)):
        with tf.io.TFRecordWriter(str(dst / f"train-{s:05d}-of-00002.tfrecord")) as w:
            for i, ex in enumerate(shard):
                edit(s, i, ex)
                w.write(ex.SerializeToString())
    return dst


def _crowd_only(ex):
    values = ex.features.feature[CROWD].int64_list.value
    values[:] = [1] * len(values)


def _no_objects(ex):
    for key in list(ex.features.feature):
        if key.startswith("image/object/"):
            del ex.features.feature[key]


def _cli(args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _common(tfrecord_dir, weights, name):
    return ["-name", name, "-tfrecord_dir", str(tfrecord_dir), "-weights", str(weights), "-config",
            "yolact_efficientnet_lite0", "-img_size", "128", "-batch_size", "2", "-seed", "3", "-noshuffle",
            "-noaugment", "-print_interval", "1"]


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("train.py: error:")]


def test_dataset_without_objects_is_a_one_line_error_before_training(records, tmp_path):
    """A json without annotations gives records with 0 objects: exit 2 naming the dataset, no run folder written
    (today's spin at 100 % CPU)."""
    data = _write_variant(records / "mini", tmp_path / "records" / "empty", lambda s, i, ex: _no_objects(ex))
    r = _cli(_common(tmp_path / "records", tmp_path / "w", "empty") + ["-train_iter", "2"])
    assert r.returncode == 2, r.stderr[-2000:]
    err = _error_lines(r.stderr)
    assert len(err) == 1 and str(data) in err[0] and "none of its 8 training records" in err[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "w").exists()


def test_records_that_never_yield_an_image_stop_the_pipeline(records, tmp_path):
    """1 record of 8 has an object, 7 are crowd-only: the record count passes (1 trainable) but, read in file order,
    the pipeline drops the crowd-only ones; with a bound of 3 consecutive drops it raises the dataset error instead
    of searching (the default bound is 1000)."""
    from data.parser import TrainRecords, count_training_records
    from yolact.training import DataError, Trainer

    data = _write_variant(records / "mini", tmp_path / "r" / "mini",
                          lambda s, i, ex: _crowd_only(ex) if (s, i) != (0, 0) else None)
    assert count_training_records(str(data / "train-*.tfrecord")) == (8, 1, ())
    t = Trainer(_opts(tmp_path / "r", tmp_path / "w", shuffle=False, augment=False, save_data_state=False,
                      deterministic=False), TrainRecords(data, max_consecutive_dropped=3), log=lambda *a: None)
    with pytest.raises(DataError, match=r"no training image in 3 consecutive records \(no non-crowd object\)"):
        t.run()


def test_corrupt_shard_is_skipped_and_counted_after_resuming_from_a_good_checkpoint(records, tmp_path):
    """Train 2 steps, then corrupt the second record of shard 1 (CRC mismatch: DataLossError, the rest of that
    shard is skipped) and resume to step 6: the previous checkpoint loads, the run finishes, and the errors are
    counted in the log lines and the JSON line."""
    rec = tmp_path / "records"
    shutil.copytree(records / "mini", rec / "mini")
    common = _common(rec, tmp_path / "w", "mini") + ["-save_interval", "2"]
    r = _cli(common + ["-train_iter", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    shard = sorted((rec / "mini").glob("train-*.tfrecord"))[1]
    raw = bytearray(shard.read_bytes())
    first = sum(len(x.numpy()) for x in tf.data.TFRecordDataset(str(shard)).take(1)) + 16  # 1 record + framing
    raw[first + 20:first + 40] = b"\xff" * 20  # inside record 2's payload
    shard.write_bytes(bytes(raw))
    r = _cli(common + ["-train_iter", "6", "-resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert "Resumed from" in r.stdout and "at step 2" in r.stdout
    assert summary["step"] == 6 and summary["skipped"] == 0 and summary["data_errors"] >= 1
    skipped_lines = [line for line in r.stdout.splitlines() if line.startswith("(data error skipped")]
    assert len(skipped_lines) == summary["data_errors"] and "DataLossError" in skipped_lines[0]
    last_progress = [line for line in r.stdout.splitlines() if line.startswith("[      5]")][-1]
    assert last_progress.endswith(f"| data errors: {summary['data_errors']}")
    assert "(warning: " in r.stdout and str(shard) in r.stdout  # the record count names the corrupt shard


def test_undecodable_images_end_the_run_with_a_fault_and_keep_the_checkpoint(records, tmp_path):
    """Every image undecodable after a good checkpoint: 100 data errors in a row end the resumed run with exit 1
    and one line; the checkpoint of step 2 is intact (a later -resume on good records continues from it)."""
    rec = tmp_path / "records"
    shutil.copytree(records / "mini", rec / "mini")
    common = _common(rec, tmp_path / "w", "mini") + ["-save_interval", "2"]
    assert _cli(common + ["-train_iter", "2"]).returncode == 0
    shutil.move(rec / "mini", rec / "good")

    def garble(s, i, ex):
        ex.features.feature["image/encoded"].bytes_list.value[:] = [b"not an image"]

    _write_variant(rec / "good", rec / "mini", garble)
    r = _cli(common + ["-train_iter", "4", "-resume"])
    assert r.returncode == 1, r.stderr[-2000:]
    err = _error_lines(r.stderr)
    assert len(err) == 1 and "100 data errors in a row at step 2" in err[0] and "Traceback" not in r.stderr
    shutil.rmtree(rec / "mini")
    shutil.move(rec / "good", rec / "mini")
    r = _cli(common + ["-train_iter", "3", "-resume"])
    assert r.returncode == 0 and "at step 2" in r.stdout, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 3


@pytest.mark.parametrize("flag,value,message", [
    ("-lr", "-1", "-lr must be > 0, got -1.0"),
    ("-momentum", "1", "-momentum must be in [0, 1), got 1.0"),
    ("-weight_decay", "-1e-4", "-weight_decay must be >= 0, got -0.0001"),
    ("-train_iter", "0", "-train_iter must be >= 1, got 0"),
    ("-warmup_iter", "-5", "-warmup_iter must be >= 0, got -5"),
    ("-lr_steps", "100,50", "-lr_steps must be increasing positive iterations, got 100,50"),
    ("-batch_size", "0", "-batch_size must be >= 1, got 0"),
    ("-img_size", "17", "-img_size must be >= 64, got 17"),
])
def test_bad_flags_are_one_line_errors_before_anything_is_built(records, tmp_path, flag, value, message):
    r = _cli(_common(records, tmp_path / "w", "mini") + [flag, value])
    assert r.returncode == 2 and _error_lines(r.stderr) == [f"train.py: error: {message}"], r.stderr[-2000:]
    assert "Begin training" not in r.stdout and not (tmp_path / "w").exists()


def test_img_size_the_backbone_cannot_take(records, tmp_path):
    """-img_size 100 is fine for EfficientNet-Lite0 (P3..P7 = 12, 6, 3, 2, 1); 17 leaves P5..P7 empty and is
    refused by the config check (the flag check already stops sizes below 64, which get_config refuses)."""
    import dataclasses

    from config import get_config
    from yolact.training.options import OptionError, check_img_size

    check_img_size(get_config("yolact_efficientnet_lite0", img_size=100))
    cfg = get_config("yolact_efficientnet_lite0")
    tiny = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=17))
    with pytest.raises(OptionError, match=r"-img_size 17 is too small for efficientnet_lite0: feature maps P3..P7 "
                                          r"would be \[2, 1, 0, 0, 0\]"):
        check_img_size(tiny)


def test_sigterm_saves_exits_75_and_resume_continues(records, tmp_path):
    args = _common(records, tmp_path / "w", "mini") + ["-train_iter", "1000", "-save_interval", "1000"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("[      1]"):  # two steps done
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    lines += out.splitlines(keepends=True)
    assert proc.returncode == 75, err[-2000:]
    summary = json.loads(lines[-1])
    n = summary["step"]
    assert n >= 2 and summary["interrupted"] == "SIGTERM" and summary["final_weights"] is None
    assert _error_lines(err) == [f"train.py: error: interrupted (SIGTERM) at step {n}; checkpoint "
                                 f"{summary['checkpoint']}; continue with -resume"]
    first_log = next(line for line in lines if line.startswith("[      0]"))
    assert "nan" not in first_log and "- img/s" in first_log
    r = _cli(args[:-4] + ["-train_iter", str(n + 1), "-save_interval", "1000", "-resume"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"at step {n}" in r.stdout and json.loads(r.stdout.strip().splitlines()[-1])["step"] == n + 1
