"""Tokenizers: bytes (one token per UTF-8 byte, no vocabulary file) and plain ids."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterable, Union

import numpy as np

from keras_dp.errors import ConfigError

#: File name `keras-dp train` saves the tokenizer's config under next to the model.
TOKENIZER_FILE = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
    """Maps text to its UTF-8 bytes (token ids 0-255) and back; no vocabulary file.

    Args:
        errors: How `decode` treats bytes that are not valid UTF-8 (a sampled model can
            produce them): `"replace"` (default), `"ignore"` or `"strict"`.
    """

    errors: str = "replace"
    kind = "bytes"
    vocab_size = 256

    def __post_init__(self):
        if self.errors not in ("replace", "ignore", "strict"):
            raise ConfigError("must be 'replace', 'ignore' or 'strict'", variable="errors",
                              received=self.errors)

    def encode(self, text: Union[str, bytes]) -> np.ndarray:
        """Returns the token ids of `text` as a uint8 array."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8).copy()

    def decode(self, ids: Iterable[int]) -> str:
        """Returns the text of `ids` (ints in [0, 256))."""
        values = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
        data = (values.reshape(-1).astype(np.int64) & 0xFF).astype(np.uint8).tobytes()
        return data.decode("utf-8", errors=self.errors)

    def get_config(self) -> Dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "errors": self.errors}


@dataclasses.dataclass(frozen=True)
class IdTokenizer:
    """Tokens that are already integer ids (the synthetic corpus); text is the ids."""

    vocab_size: int
    kind = "ids"

    def __post_init__(self):
        object.__setattr__(self, "vocab_size", int(self.vocab_size))

    def encode(self, text: Union[str, Iterable[int]]) -> np.ndarray:
        values = text.split() if isinstance(text, str) else text
        return np.asarray([int(t) for t in values], dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(str(int(i)) for i in np.asarray(ids).reshape(-1))

    def get_config(self) -> Dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size}


def tokenizer_from_config(config: Dict[str, Any]):
    """Rebuilds a tokenizer from `get_config()` output (or None -> bytes)."""
    kind = (config or {}).get("kind", "bytes")
    if kind == "bytes":
        return ByteTokenizer(errors=(config or {}).get("errors", "replace"))
    if kind == "ids":
        return IdTokenizer(config["vocab_size"])
    raise ConfigError("unknown tokenizer kind", variable="tokenizer", field="kind",
                      received=kind, fix="use 'bytes' or 'ids'")
