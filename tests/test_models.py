"""keras_dp.models.TransformerLM: shapes, causality, save/load, generation, precision."""

import keras
import numpy as np
import pytest

import keras_dp
from keras_dp.data import ByteTokenizer, IdTokenizer
from keras_dp.models import PRESETS, TransformerLM

TINY = dict(seq_len=16, d_model=32, num_layers=2, num_heads=4)


def loss_fn():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_logits_shape_and_causality(tf):
    model = TransformerLM(**TINY)
    tokens = np.random.default_rng(0).integers(0, 256, (2, 16)).astype("int32")
    logits = model(tokens).numpy()
    assert logits.shape == (2, 16, 256) and logits.dtype == np.float32
    changed = tokens.copy()
    changed[:, 10:] = (changed[:, 10:] + 7) % 256
    other = model(changed).numpy()
    # Positions before the change cannot see it; later ones do.
    np.testing.assert_allclose(other[:, :10], logits[:, :10], atol=1e-5)
    assert np.abs(other[:, 10:] - logits[:, 10:]).max() > 1e-4


def test_presets_and_bad_arguments():
    assert set(PRESETS) == {"tiny", "small", "base"}
    tiny = TransformerLM.from_preset("tiny")
    tiny.build((None, tiny.seq_len))
    assert 300_000 < tiny.count_params() < 600_000
    small = TransformerLM.from_preset("small", seq_len=64)
    assert small.seq_len == 64 and small.d_model == 384
    with pytest.raises(keras_dp.ConfigError, match="is not a preset"):
        TransformerLM.from_preset("huge")
    with pytest.raises(keras_dp.ConfigError, match="does not divide into 5 heads"):
        TransformerLM(d_model=32, num_heads=5)
    with pytest.raises(keras_dp.ConfigError, match="the tokenizer has 256 tokens"):
        TransformerLM(vocab_size=100)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.slow
def test_save_load_round_trip_gives_identical_predictions(tf, tmp_path, tie):
    model = TransformerLM(**TINY, tie_embeddings=tie, tokenizer=ByteTokenizer(errors="ignore"))
    model.compile(keras.optimizers.Adam(1e-3), loss_fn())
    x = np.random.default_rng(1).integers(0, 256, (8, 16)).astype("int32")
    model.fit(x, x, epochs=1, batch_size=4, verbose=0)
    path = str(tmp_path / "lm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, TransformerLM)
    assert loaded.get_config() == model.get_config()
    assert loaded.tokenizer == ByteTokenizer(errors="ignore")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    # The optimizer state came along too (training can continue where it stopped).
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2


def test_generation_decodes_with_the_saved_tokenizer(tf, tmp_path):
    model = TransformerLM(**TINY)
    text = model.generate("Hello", 12, seed=3)
    assert isinstance(text, str) and len(text.encode("utf-8", "replace")) >= 4
    assert model.generate("Hello", 12, seed=3) == text  # seeded
    greedy = model.generate("Hello", 12, greedy=True, return_ids=True)
    assert greedy == model.generate("Hello", 12, top_k=1, seed=9, return_ids=True)
    assert model.tokenizer.decode(greedy) == model.generate("Hello", 12, greedy=True)
    # Longer than the model's window: it slides.
    assert len(model.generate("x" * 40, 20, return_ids=True, seed=0)) == 20
    with pytest.raises(keras_dp.ConfigError, match="temperature"):
        model.generate("x", 3, temperature=0)
    ids_model = TransformerLM(vocab_size=8, tokenizer=IdTokenizer(8), **TINY)
    ids_model.build((None, 16))
    path = str(tmp_path / "ids.keras")
    ids_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.tokenizer, IdTokenizer)
    words = loaded.generate([1, 2, 3], 5, seed=0).split()
    assert len(words) == 5 and all(0 <= int(w) < 8 for w in words)


@pytest.mark.parametrize("policy,jit", [("mixed_bfloat16", False), ("mixed_float16", False),
                                        ("float32", True)])
@pytest.mark.slow
def test_mixed_precision_and_xla_train_steps(tf, policy, jit):
    model = TransformerLM(seq_len=8, d_model=16, num_layers=1, num_heads=2, dtype=policy)
    model.compile(keras.optimizers.Adam(1e-3), loss_fn(), jit_compile=jit)
    x = np.random.default_rng(2).integers(0, 256, (8, 8)).astype("int32")
    history = model.fit(x, x, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model(x).dtype == "float32"
    if policy != "float32":
        assert model.blocks[0].mlp_in.compute_dtype == policy.split("_")[1]
        assert model.blocks[0].mlp_in.kernel.dtype == "float32"
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_an_unknown_preset_is_one_config_error_naming_the_presets():
    """The one preset check (`TransformerLM.from_preset` and `keras-dp train` call it)."""
    from keras_dp.errors import ConfigError
    from keras_dp.models.presets import PRESETS, preset

    assert preset(" Tiny ") == PRESETS["tiny"]
    with pytest.raises(ConfigError, match=r"preset: is not a preset.*tiny, small, base"):
        preset("huge")
    with pytest.raises(ConfigError, match="is not a preset"):
        TransformerLM.from_preset("huge")
