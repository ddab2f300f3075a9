"""Sizes of `TransformerLM.from_preset(name)` (table in docs/data_and_models.md)."""

from keras_dp.errors import ConfigError

PRESETS = {
    "tiny": {"d_model": 128, "num_layers": 2, "num_heads": 4, "seq_len": 128, "mlp_ratio": 4,
             "dropout": 0.0, "tie_embeddings": True},
    "small": {"d_model": 384, "num_layers": 6, "num_heads": 6, "seq_len": 256, "mlp_ratio": 4,
              "dropout": 0.1, "tie_embeddings": True},
    "base": {"d_model": 768, "num_layers": 12, "num_heads": 12, "seq_len": 1024, "mlp_ratio": 4,
             "dropout": 0.1, "tie_embeddings": True},
}


def preset(name: str) -> dict:
    """The sizes of preset `name` (case-insensitive); a `ConfigError` names the presets."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ConfigError("is not a preset", variable="preset", received=name,
                          fix=f"use one of: {', '.join(PRESETS)}")
    return dict(PRESETS[key])
