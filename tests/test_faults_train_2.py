"""Training faults, round 2: one writer per run folder, config.json and weights that agree, inputs checked before
anything is written, a full disk, a diverging loss, a config.json value of the wrong type.

Every run trains yolact_efficientnet_lite0 at 128 px, batch 2, on the real records of tests/test_train.py (the first
8 coco2017_mini train images). One short run (:func:`run_folder`, 2 steps) is shared: tests that must not change a
folder copy it and compare the copy's listing and bytes before and after.
"""

import errno
import hashlib
import json
import os
import pathlib
import shutil

import pytest

from tests.test_faults_train import _cli, _common, _error_lines
from tests.test_train import _opts, records  # noqa: F401  (session fixture: 8 real records in 2 shards)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _snapshot(folder):
    """{relative path: sha256} of every file under ``folder`` (what a refused command must leave as it was)."""
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _summary(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def run_folder(records, tmp_path_factory):
    """A finished 2-step run (checkpoints ckpt-1, ckpt-2, final weights): RUN = WEIGHTS/mini. Read-only: copy it."""
    weights = tmp_path_factory.mktemp("faults2") / "w"
    r = _cli(_common(records, weights, "mini") + ["-train_iter", "2", "-save_interval", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    s = _summary(r.stdout)
    assert s["diverged"] is False and s["diverged_at"] is None and s["skipped"] == 0
    run = weights / "mini"
    assert not (run / ".lock").exists()  # released (and removed) at the end
    return run


def _copy(run, tmp_path, name="mini"):
    dst = tmp_path / "w" / name
    shutil.copytree(run, dst)
    return dst


# -- one owner per run folder ------------------------------------------------------------------------------------


def test_second_writer_is_refused_while_the_folder_is_locked(records, run_folder, tmp_path):
    """Another process holds RUN/.lock (flock): -resume is refused with one line naming it, exit 2, and nothing in
    the folder changes. A fresh run with the same -name is refused the same way."""
    from utils.run_lock import RunLock

    run = _copy(run_folder, tmp_path)
    common = _common(records, run.parent, "mini")
    with RunLock(run):
        before = _snapshot(run)
        for extra in (["-resume", "-train_iter", "3"], ["-train_iter", "3", "-overwrite"]):
            r = _cli(common + extra)
            assert r.returncode == 2, r.stderr[-2000:]
            err = _error_lines(r.stderr)
            assert len(err) == 1 and "is in use by another training run (pid " in err[0] and str(os.getpid()) in \
                err[0], r.stderr[-2000:]
            assert "Traceback" not in r.stderr and _snapshot(run) == before
    assert not (run / ".lock").exists()


def test_fresh_run_into_a_run_folder_is_refused_and_config_json_kept(records, run_folder, tmp_path):
    """Without -resume / -overwrite a folder holding checkpoints and weights is refused (before, config.json was
    replaced beside the old checkpoints): exit 2, one line, every file unchanged."""
    run = _copy(run_folder, tmp_path)
    before = _snapshot(run)
    r = _cli(_common(records, run.parent, "mini") + ["-train_iter", "1", "-img_size", "160"])
    assert r.returncode == 2, r.stderr[-2000:]
    err = _error_lines(r.stderr)
    assert len(err) == 1 and f"{run} already holds a run (checkpoint, ckpt-1.index, ckpt-2.index and 1 more)" in \
        err[0] and "-resume" in err[0] and "-overwrite" in err[0], r.stderr[-2000:]
    assert _snapshot(run) == before


def test_overwrite_starts_the_folder_anew(records, run_folder, tmp_path):
    """-overwrite with another -img_size: the old checkpoints, weights and logs are gone, the new config.json and
    the new checkpoint and weights describe one model (load_model accepts them), no temporary is left."""
    from yolact.checkpoint import config_hash, load_model, read_config, recorded_config_hash

    run = _copy(run_folder, tmp_path)
    (run / "notes.txt").write_text("mine")
    r = _cli(_common(records, run.parent, "mini") + ["-train_iter", "1", "-img_size", "160", "-overwrite"])
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(os.listdir(run))
    assert names == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index", "config.json", "label_map.json",
                     "logs", "yolact_efficientnet_lite0_1.weights.h5"], names
    cfg = read_config(str(run))
    assert cfg.img_size == 160
    assert recorded_config_hash(str(run / "ckpt-1")) == config_hash(cfg)
    assert recorded_config_hash(str(run / "yolact_efficientnet_lite0_1.weights.h5")) == config_hash(cfg)
    load_model(cfg, str(run / "ckpt-1"))
    load_model(cfg, str(run / "yolact_efficientnet_lite0_1.weights.h5"))


def test_config_json_that_does_not_describe_the_weights_is_refused(records, run_folder, tmp_path):
    """config.json edited to another -img_size (every weight still has the same shape, so nothing failed before):
    load_model refuses the checkpoint and the .weights.h5 with one line, -resume exits 2 and writes nothing."""
    from yolact.checkpoint import CheckpointError, load_model, read_config

    run = _copy(run_folder, tmp_path)
    data = json.loads((run / "config.json").read_text())
    data["model"]["img_size"] = 160
    (run / "config.json").write_text(json.dumps(data))
    cfg = read_config(str(run))
    for target in (run, run / "ckpt-2", run / "yolact_efficientnet_lite0_2.weights.h5"):
        with pytest.raises(CheckpointError, match=r"was saved for another model than .*config\.json describes"):
            load_model(cfg, str(target))
    before = _snapshot(run)
    r = _cli(_common(records, run.parent, "mini")[:-12] + ["-resume", "-train_iter", "3"])
    assert r.returncode == 2, r.stderr[-2000:]
    err = _error_lines(r.stderr)
    assert len(err) == 1 and "-resume: " in err[0] and "was saved for another model" in err[0], r.stderr[-2000:]
    assert _snapshot(run) == before


# -- inputs checked before anything is written -------------------------------------------------------------------


@pytest.mark.parametrize("content,message", [
    (None, "-val_annotations not found: "),
    ('{"num_classes": 81, "categories": []}', "is not a COCO annotation file (no images, annotations list)"),
    ("[1, 2", "is not readable json"),
])
def test_val_annotations_are_checked_before_training(records, tmp_path, content, message):
    ann = tmp_path / "val.json"
    if content is not None:
        ann.write_text(content)
    r = _cli(_common(records, tmp_path / "w", "mini") + ["-train_iter", "2", "-val_interval", "1",
                                                         "-val_annotations", str(ann)])
    assert r.returncode == 2, r.stderr[-2000:]
    err = _error_lines(r.stderr)
    assert len(err) == 1 and message in err[0] and str(ann) in err[0], r.stderr[-2000:]
    assert "Begin training" not in r.stdout and not (tmp_path / "w").exists()


def test_failed_resume_writes_nothing(records, run_folder, tmp_path):
    """-resume of a run that does not exist creates no folder; -resume from a corrupt checkpoint (truncated data
    file) with a longer -train_iter leaves config.json, label_map.json and every other file as they were."""
    r = _cli(_common(records, tmp_path / "none", "mini")[:-12] + ["-resume"])
    assert r.returncode == 2 and _error_lines(r.stderr) == [
        f"train.py: error: -resume: no checkpoint in {tmp_path / 'none' / 'mini'}"], r.stderr[-2000:]
    assert not (tmp_path / "none").exists()
    run = _copy(run_folder, tmp_path)
    data = run / "ckpt-2.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    before = _snapshot(run)
    r = _cli(_common(records, run.parent, "mini")[:-12] + ["-resume", "-train_iter", "5"])
    assert r.returncode == 2, r.stderr[-2000:]
    err = _error_lines(r.stderr)
    assert len(err) == 1 and "cannot resume from" in err[0] and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert _snapshot(run) == before


def test_config_value_of_the_wrong_type_is_one_line(records, run_folder, tmp_path):
    """``"img_size": "256"`` in config.json: read_config names the field and the file; train.py -resume and
    inference.py exit 2 with that line (a traceback before)."""
    import subprocess
    import sys

    from yolact.checkpoint import RunFilesError, read_config

    run = _copy(run_folder, tmp_path)
    data = json.loads((run / "config.json").read_text())
    data["model"]["img_size"] = "256"
    (run / "config.json").write_text(json.dumps(data))
    want = f"cannot read {run / 'config.json'}: model.img_size must be an integer, got '256' (str)"
    with pytest.raises(RunFilesError) as e:
        read_config(str(run))
    assert str(e.value) == want
    before = _snapshot(run)
    r = _cli(_common(records, run.parent, "mini")[:-12] + ["-resume", "-train_iter", "3"])
    assert r.returncode == 2 and _error_lines(r.stderr) == [f"train.py: error: -resume: {want}"], r.stderr[-2000:]
    r = subprocess.run([sys.executable, "inference.py", "-checkpoint", str(run), "-image",
                        str(ROOT / "samples" / os.listdir(ROOT / "samples")[0])], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"inference.py: error: {want}", r.stderr[-2000:]
    assert _snapshot(run) == before


# -- a full disk ---------------------------------------------------------------------------------------------------


def _trainer(records, weights, **kw):
    from data.parser import TrainRecords
    from yolact.training import Trainer

    opts = _opts(records, weights, deterministic=False, save_data_state=False, **kw)
    return Trainer(opts, TrainRecords(os.path.join(opts.tfrecord_dir, opts.name)), log=lambda *a: None)


def test_disk_full_while_writing_the_final_weights(records, tmp_path, monkeypatch):
    """ENOSPC while the final .weights.h5 is flushed (injected into os.fsync of its temporary; for real, Keras'
    HDF5 writer crashed the process with exit 139 and left half a file): DiskFull (exit 1, one line), no
    .weights.h5 and no temporary in the folder, the last checkpoint complete and resumable."""
    from utils.cli import EXIT_FAULT
    from yolact.training import DiskFull

    real_fsync = os.fsync

    def fsync(fd):
        if ".weights.h5.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFull) as e:
        _trainer(records, tmp_path / "w", train_iter=1).run()
    monkeypatch.undo()
    run = tmp_path / "w" / "mini"
    assert e.value.exit_code == EXIT_FAULT and "\n" not in str(e.value)
    assert str(e.value).startswith(f"no space left on the device while writing {run}/yolact_efficientnet_lite0_1")
    assert sorted(os.listdir(run)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index", "config.json",
                                       "label_map.json", "logs"]
    s = _trainer(records, tmp_path / "w", train_iter=2, resume=True).run()
    assert s["step"] == 2 and os.path.isfile(s["final_weights"])


def test_disk_full_while_saving_a_checkpoint_and_stale_temporaries(records, tmp_path, monkeypatch):
    """ENOSPC while TensorFlow writes ckpt-2 (injected: the save leaves ckpt-2_temp/ with a partial shard and raises
    TensorFlow's error, as on a full disk): DiskFull names the step and the intact ckpt-1, ckpt-2_temp/ and ckpt-2.*
    are removed. Then what a SIGKILL leaves (ckpt-7_temp/, utils.atomic temporaries, a .lock of a dead process) is
    removed by the next -resume, which continues from ckpt-1."""
    import tensorflow as tf

    from yolact.training import DiskFull

    real_save = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kw):
        if checkpoint_number == 2:
            temp = pathlib.Path(self.directory) / "ckpt-2_temp"
            temp.mkdir()
            (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\0" * 4096)
            raise tf.errors.ResourceExhaustedError(None, None, f"{temp}/part-00000-of-00001.data-00000-of-00001; "
                                                               "No space left on device")
        return real_save(self, checkpoint_number=checkpoint_number, **kw)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    with pytest.raises(DiskFull, match=r"while saving checkpoint .*ckpt-2 at step 2 \(removed; latest complete "
                                       r"checkpoint: .*ckpt-1\)"):
        _trainer(records, tmp_path / "w", train_iter=3, save_interval=1).run()
    monkeypatch.undo()
    run = tmp_path / "w" / "mini"
    assert sorted(os.listdir(run)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index", "config.json",
                                       "label_map.json", "logs"]
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-1")
    (run / "ckpt-7_temp").mkdir()
    (run / "ckpt-7_temp" / "part-00000-of-00001.index").write_bytes(b"x")
    (run / ".config.json.tmp-abc123").write_text("{")
    (run / ".lock").write_text("pid 999999 host gone since 2020-01-01T00:00:00\n")  # no process holds its flock
    s = _trainer(records, tmp_path / "w", train_iter=2, resume=True).run()
    assert s["step"] == 2 and s["final_weights"]
    names = sorted(os.listdir(run))
    assert not [n for n in names if "_temp" in n or ".tmp-" in n or n == ".lock"], names


# -- divergence ----------------------------------------------------------------------------------------------------


def test_diverging_loss_saves_a_checkpoint_and_exits_1(records, tmp_path):
    """lr 1e3 without warmup: the weights explode within a few steps; the run reports it in the log and in the
    JSON line (diverged, the step), saves a checkpoint, writes no final weights and exits 1 with one line."""
    from yolact.training.trainer import DIVERGENCE_LOSS, DIVERGENCE_STEPS

    r = _cli(_common(records, tmp_path / "w", "mini") + ["-train_iter", "30", "-lr", "1e3", "-warmup_iter", "0"])
    assert r.returncode == 1, r.stderr[-2000:]
    s = _summary(r.stdout)
    assert s["diverged"] is True and s["final_weights"] is None and s["interrupted"] is None
    assert s["step"] == s["diverged_at"] + DIVERGENCE_STEPS < 30
    err = _error_lines(r.stderr)
    assert len(err) == 1 and f"training diverged from step {s['diverged_at']}" in err[0], r.stderr[-2000:]
    assert f"Training diverged: the total loss was non-finite or above {DIVERGENCE_LOSS:g}" in r.stdout
    run = tmp_path / "w" / "mini"
    assert s["checkpoint"] == str(run / f"ckpt-{s['step']}") and (run / f"ckpt-{s['step']}.index").is_file()
    assert not list(run.glob("*.weights.h5"))
