"""keras_dp.schedules (warmup, linear scaling rule) and keras_dp.callbacks."""

import io
import math

import keras
import numpy as np
import pytest

import keras_dp
from keras_dp.callbacks import LearningRateLogger, Progress, Throughput, WarmupScheduler
from keras_dp.schedules import WarmupSchedule, scaled_learning_rate


def test_linear_scaling_rule():
    assert scaled_learning_rate(1e-3, 256, 32) == pytest.approx(8e-3)
    assert scaled_learning_rate(3e-3, 32, 32) == pytest.approx(3e-3)
    with pytest.raises(keras_dp.ConfigError, match="Received: base_batch=0"):
        scaled_learning_rate(1e-3, 64, 0)


@pytest.mark.parametrize("decay", ["constant", "linear", "cosine"])
def test_warmup_schedule_per_step(tf, decay):
    schedule = WarmupSchedule(0.1, warmup_steps=10, decay_steps=110, decay=decay,
                              min_ratio=0.1)
    assert float(schedule(0)) == pytest.approx(0.01)     # (0 + 1) / 10 of the peak
    assert float(schedule(4)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.1)
    end = {"constant": 0.1, "linear": 0.01, "cosine": 0.01}[decay]
    assert float(schedule(110)) == pytest.approx(end)
    assert float(schedule(500)) == pytest.approx(end)
    middle = {"constant": 0.1, "linear": 0.055, "cosine": 0.055}[decay]
    assert float(schedule(60)) == pytest.approx(middle)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert again.get_config() == schedule.get_config()
    with pytest.raises(keras_dp.ConfigError, match="decay_steps"):
        WarmupSchedule(0.1, 10, None, "cosine")


def small_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    return model


def test_callbacks_in_fit(tf):
    model = small_model()
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x, y = np.ones((64, 4), "float32"), np.ones((64, 1), "float32")
    throughput = Throughput(global_batch_size=8, tokens_per_example=16, num_replicas=2,
                            skip_steps=2)
    warmup = WarmupScheduler(WarmupSchedule(0.1, warmup_steps=4, decay="constant"))
    logger = LearningRateLogger()
    stream = io.StringIO()
    progress = Progress(16, style="plain", bits_per="byte", is_chief=True, interval=0,
                        stream=stream)
    silent_stream = io.StringIO()
    silent = Progress(16, style="auto", is_chief=False, stream=silent_stream)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                        callbacks=[warmup, logger, throughput, progress, silent])
    summary = throughput.summary()
    assert summary["timed_steps"] == 14  # 16 steps, the first 2 not timed
    assert summary["tokens_per_sec"] == pytest.approx(summary["examples_per_sec"] * 16)
    assert summary["examples_per_sec_per_replica"] == pytest.approx(
        summary["examples_per_sec"] / 2)
    assert "tokens_per_sec" in history.history
    # Warmup reached the peak; the logger reported it.
    assert history.history["lr"][-1] == pytest.approx(0.1)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("step 16/16") and "bits/byte" in lines[-1]
    assert silent_stream.getvalue() == ""  # non-chief: nothing
    assert math.isfinite(history.history["loss"][-1])
