"""The builtin corpus: Python's documentation topics (`pydoc_data.topics`, joined in name
order; the text differs slightly between Python versions). See docs/data_and_models.md."""

from __future__ import annotations

import functools
import sys

from keras_dp.data.corpus import InMemoryCorpus, join_documents, split_train_validation


@functools.lru_cache(maxsize=1)
def builtin_corpus() -> InMemoryCorpus:
    """The builtin corpus with its `train` and `validation` splits (bytes)."""
    from pydoc_data import topics

    stream = join_documents(topics.topics[name].strip().encode("utf-8")
                            for name in sorted(topics.topics))
    version = ".".join(str(v) for v in sys.version_info[:2])
    return InMemoryCorpus(f"builtin (pydoc_data.topics, Python {version})",
                          split_train_validation(stream))
