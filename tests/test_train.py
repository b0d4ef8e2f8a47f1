"""train.py: flags, optimizer form, skipped non-finite steps, resume, corrupt checkpoints, multi-worker, learning.

TFRecords are built once per session from real coco2017_mini images with the TFRecord creator.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from utils.flags_util import DEFINE_number, parse_number

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def records(coco_mini, tmp_path_factory):
    """TFRecords of the first 8 (train) images of coco2017_mini in 2 shards: RECORDS/mini/train-*.tfrecord."""
    from data.coco_json import SplitSpec
    from data.coco_tfrecord_creator import create_tfrecords

    out = tmp_path_factory.mktemp("records")
    data = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())
    images = data["images"][:8]
    ids = {im["id"] for im in images}
    data = dict(data, images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    (out / "train.json").write_text(json.dumps(data))
    report = create_tfrecords([SplitSpec("train", str(coco_mini / "train2017"), str(out / "train.json"))],
                              str(out / "mini"), num_shards=2, num_workers=1, progress=False)
    assert report["splits"]["train"]["images_written"] == 8
    return out


def _opts(records, weights, **kw):
    from yolact.training import TrainOptions

    base = dict(name="mini", tfrecord_dir=str(records), weights=str(weights), config="yolact_efficientnet_lite0",
                img_size=128, batch_size=2, train_iter=3, print_interval=100, save_interval=100, seed=7,
                deterministic=True, save_data_state=True)
    base.update(kw)
    return TrainOptions(**base)


class NanLossTask:
    """Test fault injection: a YolactTask whose total loss is NaN at the global steps ``NAN_STEPS``."""

    @staticmethod
    def make(nan_steps):
        from yolact.training.task import YolactTask

        class _Task(YolactTask):
            def compute_loss(self, outputs, targets, seed, step, maskiou_net=None):
                losses = super().compute_loss(outputs, targets, seed, step, maskiou_net)
                hit = tf.reduce_any(tf.equal(step, tf.constant(sorted(nan_steps) or [-1], tf.int64)))
                losses["total"] = losses["total"] * tf.where(hit, float("nan"), 1.0)
                return losses

        return _Task


def stop_after(n):
    """A Keras callback that stops training after ``n`` steps of the run (as a SIGTERM would)."""
    import keras

    class StopAfter(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step + 1 >= n:
                self.model.stop_training = True

    return StopAfter()


def _trainer(opts, nan_steps=(), stop_at_step=None):
    from data.parser import TrainRecords
    from yolact.training import Trainer

    return Trainer(opts, TrainRecords(os.path.join(opts.tfrecord_dir, opts.name)), log=lambda *a: None,
                   task_cls=NanLossTask.make(nan_steps) if nan_steps else None,
                   callbacks=[stop_after(stop_at_step)] if stop_at_step else ())


def _run(opts, **kw):
    t = _trainer(opts, **kw)
    summary = t.run()
    return t, summary


# -- flags and optimizer ------------------------------------------------------------------------------------------


def test_weight_decay_expression_flag():
    fv = flags.FlagValues()
    DEFINE_number("weight_decay", None, "decay", flag_values=fv)
    fv(["train.py", "-weight_decay", "5 * 1e-4"])
    assert fv.weight_decay == pytest.approx(5e-4, rel=1e-15)
    fv(["train.py", "-weight_decay=1e-3 / 2"])
    assert fv.weight_decay == pytest.approx(5e-4, rel=1e-15)
    for bad in ("__import__('os')", "5 + 1", "5 **2", "", "1/0", "5 *"):
        with pytest.raises(flags.IllegalFlagValueError, match="cannot parse"):
            fv(["train.py", "-weight_decay", bad])
    assert parse_number("2 * 3 / 4") == 1.5 and parse_number(0.1) == 0.1


def test_torch_sgd_matches_pytorch_update_rule_across_lr_changes_and_skips():
    import keras

    from utils.lr_schedule import YolactLRSchedule
    from utils.torch_sgd import TorchSGD

    w = keras.Variable(np.array([1.0, -2.0, 0.5], np.float32))
    sched = YolactLRSchedule(0.1, warmup_init=0.01, warmup_until=2, steps=(3,))
    opt = TorchSGD(sched, momentum=0.9, l2_decay=0.01)
    ref_w, buf = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    lrs = [0.01, 0.055, 0.1, 0.01, 0.01]  # warmup 0..2, then step at 3 (gamma 0.1)
    for it in range(5):
        g = np.array([0.5, 0.25, -1.0]) * (it + 1)
        skip = it == 1
        opt.apply_update.assign(not skip)
        opt.apply_gradients([(tf.constant(g, tf.float32), w)])
        if not skip:  # torch.optim.SGD: d = g + wd*w; buf = mu*buf + d; w -= lr*buf
            buf = 0.9 * buf + (g + 0.01 * ref_w)
            ref_w = ref_w - lrs[it] * buf
        np.testing.assert_allclose(w.numpy(), ref_w, rtol=2e-6, atol=1e-7)
    assert int(opt.iterations.numpy()) == 5


# -- training runs ------------------------------------------------------------------------------------------------


def _weights(trainer):
    return [v.numpy() for v in trainer.model.weights]


def test_nonfinite_loss_is_skipped_and_counted(records, tmp_path):
    t1, s1 = _run(_opts(records, tmp_path / "a", train_iter=1))
    t3, s3 = _run(_opts(records, tmp_path / "b", train_iter=3), nan_steps={1, 2})
    assert s1["skipped"] == 0 and s3["skipped"] == 2 and s3["step"] == 3
    assert [h["finite"] for h in s3["history"]] == [True, False, False]
    # Two separate runs: weights agree to ~1e-6 and momentum buffers to a few % of their size, because the CPU
    # gradient of the shared head's upfeature bias is not bitwise repeatable (see the resume test). A skipped
    # step that was applied would move weights by lr * buffer (>> 1e-6) and double the buffers.
    for a, b in zip(_weights(t1), _weights(t3)):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-6)
    for a, b in zip(t1.inner_opt.momentums, t3.inner_opt.momentums):
        a, b = a.numpy(), b.numpy()
        np.testing.assert_allclose(a, b, rtol=0, atol=0.1 * float(np.abs(b).max()) + 1e-12)
    assert int(t3.inner_opt.iterations.numpy()) == 3  # iteration advances as the original's


def test_clip_grad_norm_bounds_the_first_update(records, tmp_path):
    """First step with -clip_grad_norm c: w1 = w0 - lr0 * (g_c + wd * w0) with ||g_c|| = c (the real
    gradient's norm is larger), so ||w1 - w0 + lr0 * wd * w0|| over all trainable variables equals lr0 * c."""
    clip = 1.0  # below the real gradient's norm (8.3 here), far above float32 rounding of the update (~4e-6)
    t0 = _trainer(_opts(records, tmp_path / "init", train_iter=1, clip_grad_norm=clip))
    t0.setup()
    w0 = [v.numpy() for v in t0.model.trainable_variables]
    t1, s1 = _run(_opts(records, tmp_path / "clip", train_iter=1, clip_grad_norm=clip))
    lr0, wd = s1["history"][0]["lr"], t1.inner_opt.l2_decay
    d = [w1.numpy() - a + lr0 * wd * a for w1, a in zip(t1.model.trainable_variables, w0)]
    norm = float(np.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in d)))
    assert norm == pytest.approx(lr0 * clip, rel=2e-2)


def test_clip_grad_norm_refuses_float16_loss_scaling(records, tmp_path):
    from yolact.training import OptionError

    with pytest.raises(OptionError, match="does not combine with -mixed_precision float16"):
        _trainer(_opts(records, tmp_path, clip_grad_norm=5.0, mixed_precision="float16"))


@pytest.mark.slow
def test_resume_after_interruption_equals_uninterrupted_run(records, tmp_path):
    full, s_full = _run(_opts(records, tmp_path / "full", train_iter=4))
    _, s_int = _run(_opts(records, tmp_path / "cut", train_iter=4), stop_at_step=2)
    assert s_int["step"] == 2 and s_int["interrupted"] == "stopped" and s_int["final_weights"] is None
    resumed, s_res = _run(_opts(records, tmp_path / "cut", train_iter=4, resume=True))
    assert s_res["step"] == 4 and [h["step"] for h in s_res["history"]] == [2, 3]
    # same losses at steps 2, 3 as the uninterrupted run (same data, lr and momentum)
    for a, b in zip(s_full["history"][2:], s_res["history"]):
        assert a["lr"] == b["lr"]
        np.testing.assert_allclose(a["total"], b["total"], rtol=1e-6)
    # Losses agree to float32 rounding (bitwise on some CPUs; CI's differed in the 7th digit). The weights agree to ~1e-6: the CPU gradient of the shared head's upfeature bias is
    # not bitwise repeatable even with op determinism (two uninterrupted runs differ too), which is why the
    # momentum buffers are compared relative to their size.
    for a, b in zip(_weights(full), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-6)
    for a, b in zip(full.inner_opt.momentums, resumed.inner_opt.momentums):
        a, b = a.numpy(), b.numpy()
        assert np.max(np.abs(a - b)) <= 0.1 * np.max(np.abs(a)) + 1e-6
    assert os.path.exists(s_res["final_weights"])


def _cli(args, env=None, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_trains_then_corrupt_checkpoint_gives_one_line_error(records, tmp_path):
    weights = tmp_path / "w"
    common = ["-name", "mini", "-tfrecord_dir", str(records), "-weights", str(weights), "-config",
              "yolact_efficientnet_lite0", "-img_size", "128", "-batch_size", "2", "-seed", "3",
              "-weight_decay", "5 * 1e-4", "-momentum", "0.9", "-print_interval", "1", "-save_interval", "1"]
    r = _cli(common + ["-train_iter", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "B:" in r.stdout and "img/s" in r.stdout and "ETA" in r.stdout
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["skipped"] == 0
    assert os.path.exists(summary["final_weights"]) and list((weights / "mini" / "logs").iterdir())
    # corrupt the latest checkpoint's data
    for f in (weights / "mini").glob("ckpt-2.data-*"):
        f.write_bytes(b"garbage" * 100)
    r = _cli(common + ["-train_iter", "3", "-resume"])
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(err) == 1 and "cannot resume" in err[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    # missing dataset: clear error too
    r = _cli(["-name", "nope", "-tfrecord_dir", str(records), "-weights", str(weights)])
    assert r.returncode == 2 and "no training records" in r.stderr and "Traceback" not in r.stderr


def test_resume_with_another_config_gives_clear_error(records, tmp_path):
    from yolact.training import OptionError

    _run(_opts(records, tmp_path / "w", train_iter=1))
    with pytest.raises(OptionError, match="-config yolact_resnet50 contradicts"):
        _run(_opts(records, tmp_path / "w", train_iter=2, resume=True, config="yolact_resnet50"))


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.extended  # two training processes (tf.distribute multi-worker): a release check
def test_two_workers_multiworker_mirrored_end_with_identical_weights(records, tmp_path):
    import h5py

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = ["-name", "mini", "-tfrecord_dir", str(records), "-weights", str(tmp_path / "w"), "-config",
            "yolact_efficientnet_lite0", "-img_size", "128", "-batch_size", "4", "-train_iter", "3", "-seed", "5",
            "-print_interval", "1", "-save_interval", "100"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = []
    for i in range(2):
        env_i = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env_i,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=540) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "2 replica(s)" in outs[0][0]
    paths = [json.loads(out.strip().splitlines()[-1])["final_weights"] for out, _ in outs]
    assert paths[0] != paths[1]

    def read(path):
        arrays = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                         else None)
        return arrays

    a, b = read(paths[0]), read(paths[1])
    assert a.keys() == b.keys() and len(a) > 100
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_short_real_training_lowers_the_loss(records, tmp_path, shared_dir):
    """30 steps on real COCO images from ImageNet EfficientNet-Lite0 features, the original's lr schedule (warmup
    from 1e-4): mean loss of the last 8 steps is clearly below that of the first 8 (augmentation off, so the
    images repeat). At 160 px the many tiny COCO objects of these images make the loss rise early on (the mask loss
    is divided by each GT box's area in prototype pixels); the gradients equal the original's
    (tests/test_gradients.py), so 256 px is used."""
    init = shared_dir / "weights" / "efficientnet-lite0-57934424.npz"
    _, s = _run(_opts(records, tmp_path / "w", train_iter=30, img_size=256, batch_size=4,
                      augment=False, deterministic=False, save_data_state=False, init=str(init)))
    totals = [h["total"] for h in s["history"]]
    assert s["skipped"] == 0 and len(totals) == 30 and np.all(np.isfinite(totals))
    first, last = np.mean(totals[:8]), np.mean(totals[-8:])
    assert last < 0.8 * first, (first, last)


def test_checkpoint_holds_every_model_weight(records, tmp_path):
    """A training checkpoint restored by the inference loader gives exactly the trained weights (all of them)."""
    from yolact.model import checkpoint_variables
    from yolact.checkpoint import load_model

    t, s = _run(_opts(records, tmp_path / "w", train_iter=2, deterministic=False, save_data_state=False))
    trained = checkpoint_variables(t.model)
    loaded = checkpoint_variables(load_model(t.cfg, s["checkpoint"]))
    assert set(trained) == set(loaded) and len(trained) > 250
    for key, var in trained.items():
        np.testing.assert_array_equal(var.numpy(), loaded[key].numpy(), err_msg=key)


def test_run_folder_describes_itself_and_resume_checks_it(records, tmp_path):
    """config.json holds the resolved config after all flags (explicit values as given, the config's autoscaled
    max_iter replaced by -train_iter, augmentation switches off); label_map.json is the dataset's; -resume with
    another -img_size is a one-line error (exit 2); -resume without -config/-img_size takes config.json's."""
    from yolact.ops.label_map import read_label_map

    weights = tmp_path / "w"
    common = ["-name", "mini", "-tfrecord_dir", str(records), "-weights", str(weights), "-seed", "3"]
    r = _cli(common + ["-config", "yolact_efficientnet_lite0", "-img_size", "160", "-batch_size", "2",
                       "-train_iter", "1", "-lr", "2e-3", "-lr_steps", "5,7", "-warmup_iter", "3", "-momentum", "0.8",
                       "-weight_decay", "1e-4", "-noaugment"])
    assert r.returncode == 0, r.stderr[-2000:]
    run = weights / "mini"
    saved = json.loads((run / "config.json").read_text())
    assert saved["name"] == "yolact_efficientnet_lite0" and saved["model"]["img_size"] == 160
    assert saved["model"]["backbone"] == "efficientnet_lite0" and saved["model"]["num_classes"] == 1 + len(
        json.loads((records / "mini" / "label_map.json").read_text())["categories"])
    assert saved["anchors"]["pred_scales"] == [int(int(s / 550 * 512) / 512 * 160) for s in (24, 48, 96, 192, 384)]
    assert saved["train"] == {"lr": 2e-3, "momentum": 0.8, "weight_decay": 1e-4, "gamma": 0.1,
                              "lr_warmup_init": 1e-4, "lr_warmup_until": 3, "max_iter": 1, "lr_steps": [5, 7],
                              "batch_size": 2}
    assert not any(v for k, v in saved["parser"].items() if k.startswith("augment_"))
    assert read_label_map(str(run / "label_map.json")) == read_label_map(str(records / "mini" / "label_map.json"))
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert pathlib.Path(summary["final_weights"]).parent == run and summary["run_dir"] == str(run)

    r = _cli(common + ["-resume", "-img_size", "128", "-train_iter", "2"])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("train.py: error:")]
    assert err == [f"train.py: error: -resume: -img_size 128 contradicts {run}/config.json (img_size 160)"]

    r = _cli(common + ["-resume", "-train_iter", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 2
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["train"] == dict(saved["train"], max_iter=2) and resumed["model"] == saved["model"]


def test_init_from_a_run_folder_checks_the_architecture(records, tmp_path):
    """-init RUN_DIR loads the run's latest checkpoint (exactly its weights); a run folder whose config.json has
    another img_size or backbone is a one-line InitError before any step (another class count is fine-tuning:
    tests/test_finetune.py)."""
    from yolact.model import checkpoint_variables
    from yolact.training import InitError

    src, _ = _run(_opts(records, tmp_path / "a", train_iter=1, deterministic=False, save_data_state=False))
    t = _trainer(_opts(records, tmp_path / "b", init=str(tmp_path / "a" / "mini"), deterministic=False))
    t.setup()
    mine, theirs = checkpoint_variables(t.model), checkpoint_variables(src.model)
    for key in theirs:
        np.testing.assert_array_equal(mine[key].numpy(), theirs[key].numpy(), err_msg=key)

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "a" / "mini", other)
    saved = json.loads((other / "config.json").read_text())
    for field, value, text in (("img_size", 160, "img_size 160 vs 128"), ("backbone", "resnet50",
                                                                           "backbone resnet50 vs efficientnet")):
        (other / "config.json").write_text(json.dumps(dict(saved, model=dict(saved["model"], **{field: value}))))
        with pytest.raises(InitError, match=f"-init {other} has another architecture than this run \\({text}"):
            _trainer(_opts(records, tmp_path / "c", init=str(other))).setup()
