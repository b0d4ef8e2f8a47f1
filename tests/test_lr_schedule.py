"""LR schedule: the original's warmup/step values (train.py set_lr) and the batch-size autoscale rule."""

import json

import keras
import numpy as np
import pytest

from config import get_config
from utils.lr_schedule import YolactLRSchedule, autoscale, schedule_from_config

COCO_STEPS = (280_000, 600_000, 700_000, 750_000)


def _v(sched, it):
    return float(np.asarray(sched(it)))


def test_coco_schedule_exact_values():
    sched, scaled = schedule_from_config(get_config("yolact_base").train, batch_size=8)
    assert scaled.lr == 1e-3 and scaled.max_iter == 800_000 and scaled.lr_steps == COCO_STEPS
    f = np.float32
    assert _v(sched, 0) == f(1e-4)
    assert _v(sched, 250) == f((1e-3 - 1e-4) * 0.5 + 1e-4) == f(5.5e-4)
    assert _v(sched, 500) == f(1e-3)
    assert _v(sched, 501) == f(1e-3)
    assert _v(sched, 279_999) == f(1e-3)
    for k, s in enumerate(COCO_STEPS, start=1):
        expected = f(1e-3 * 0.1**k)
        assert _v(sched, s) == expected, (s, k)
        assert _v(sched, s + 1) == expected
        assert _v(sched, s - 1) == f(1e-3 * 0.1 ** (k - 1))
    assert _v(sched, 799_999) == f(1e-7)


def test_autoscale_batch_16_and_4():
    train = get_config("yolact_base").train
    s16 = autoscale(train.lr, train.max_iter, train.lr_steps, 16)
    assert s16.factor == 2.0 and s16.lr == 2e-3 and s16.max_iter == 400_000.0
    assert s16.lr_steps == (140_000.0, 300_000.0, 350_000.0, 375_000.0)
    sched, _ = schedule_from_config(train, batch_size=16)
    f = np.float32
    assert _v(sched, 0) == f(1e-4)  # warmup start not scaled
    assert _v(sched, 250) == f((2e-3 - 1e-4) * 0.5 + 1e-4)  # warmup length not scaled
    assert _v(sched, 500) == f(2e-3)
    assert _v(sched, 139_999) == f(2e-3)
    assert _v(sched, 140_000) == f(2e-4)
    assert _v(sched, 375_000) == f(2e-3 * 0.1**4)
    s4 = autoscale(train.lr, train.max_iter, train.lr_steps, 4)
    assert s4.lr == 5e-4 and s4.max_iter == 1_600_000.0 and s4.lr_steps == (560_000.0, 1_200_000.0, 1_400_000.0, 1_500_000.0)
    s12 = autoscale(train.lr, train.max_iter, train.lr_steps, 12)  # floor division by 1.5
    assert s12.max_iter == 533_333.0 and s12.lr_steps[0] == 186_666.0


def test_no_autoscale_and_explicit_lr():
    train = get_config("yolact_base").train
    sched, scaled = schedule_from_config(train, batch_size=16, enabled_autoscale=False)
    assert scaled.lr == 1e-3 and scaled.lr_steps == COCO_STEPS and _v(sched, 280_000) == np.float32(1e-4)
    sched, scaled = schedule_from_config(train, batch_size=16, lr=1e-2)
    assert scaled.lr == 1e-2 and scaled.lr_steps[0] == 140_000.0  # explicit lr is not scaled, steps are
    assert _v(sched, 140_000) == np.float32(1e-3)
    with pytest.raises(ValueError, match="batch_size"):
        autoscale(1e-3, 10, (5,), 0)


def test_explicit_lr_steps_are_used_as_given():
    train = get_config("yolact_base").train
    sched, scaled = schedule_from_config(train, batch_size=16, lr=1e-2, lr_steps=[600, 800])
    assert scaled.lr_steps == (600, 800) and scaled.max_iter == 400_000.0
    assert _v(sched, 599) == np.float32(1e-2) and _v(sched, 600) == np.float32(1e-3)
    assert _v(sched, 800) == np.float32(1e-4)
    for bad in ([800, 600], [0, 10]):
        with pytest.raises(ValueError, match="increasing positive"):
            schedule_from_config(train, batch_size=8, lr_steps=bad)


def test_schedule_serializes_and_drives_an_optimizer():
    sched = YolactLRSchedule(1e-3, steps=(10, 20))
    cfg = keras.optimizers.schedules.serialize(sched)
    json.dumps(cfg)
    again = keras.optimizers.schedules.deserialize(cfg)
    for it in (0, 5, 10, 25):
        assert _v(again, it) == _v(sched, it)
    opt = keras.optimizers.SGD(learning_rate=sched)
    assert float(opt.learning_rate) == np.float32(1e-4)  # iteration 0
