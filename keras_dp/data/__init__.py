"""Sharded, deterministic input pipelines for data-parallel training.

```python
with keras_dp.scope() as ctx:
    train = keras_dp.data.text_dataset("builtin", seq_len=128,
                                       global_batch_size=ctx.global_batch(32))
```

- `text_dataset(source, ...)`: language-model batches `(inputs, targets)` from
  the builtin corpus, local text files, a tensorflow-datasets dataset or a
  synthetic Markov corpus; one input pipeline per worker, each reading only
  its own part; the same global batches for any number of workers
  (the rule is in `keras_dp/data/pipeline.py`).
- `distribute(dataset_fn, global_batch_size=...)`: the same for your own
  per-worker `dataset_fn(input_context)`.
- `global_batch_size(per_replica)`, `steps_per_epoch(examples, global_batch)`.
- `ByteTokenizer`: bytes as tokens; saved with the model.
"""

from __future__ import annotations

from typing import Optional

from keras_dp.data.batching import distribute, global_batch_size, per_replica_batch_size, \
    steps_per_epoch
from keras_dp.data.builtin import builtin_corpus
from keras_dp.data.corpus import Corpus, InMemoryCorpus, split_train_validation
from keras_dp.data.pipeline import StreamLayout, pipeline_dataset
from keras_dp.data.store import files_corpus, tfds_corpus
from keras_dp.data.synthetic import MarkovCorpus
from keras_dp.data.tokenizer import ByteTokenizer, IdTokenizer, load_tokenizer
from keras_dp.errors import ConfigError

__all__ = [
    "ByteTokenizer", "Corpus", "IdTokenizer", "InMemoryCorpus", "MarkovCorpus", "StreamLayout",
    "distribute", "global_batch_size", "load_corpus", "load_tokenizer",
    "per_replica_batch_size", "split_train_validation", "steps_per_epoch", "text_dataset",
    "text_dataset_fn",
]


def load_corpus(source="builtin", *, data_dir: Optional[str] = None,
                cache_dir: Optional[str] = None, text_feature: Optional[str] = None,
                download: bool = False) -> Corpus:
    """Resolves a source to a `Corpus`.

    Args:
        source: `"builtin"` (Python's documentation topics, offline),
            `"synthetic"` or `"synthetic:vocab=16,order=1,tokens=200000,seed=0"`
            (a random Markov chain with a known entropy rate), `"tfds:NAME"`
            (a tensorflow-datasets text dataset prepared in `data_dir`), a
            local text file, a glob or a list of them, or a `Corpus`.
        data_dir: tensorflow-datasets data directory for `"tfds:"` sources.
        cache_dir: Where converted (sharded) datasets are written; default
            `$KERAS_DP_CACHE_DIR` or `~/.cache/keras_dp`.
        text_feature: The text feature of a `"tfds:"` dataset (default: its
            only text feature).
        download: Let tensorflow-datasets download and prepare a missing
            `"tfds:"` dataset (needs network); default False fails fast.

    Returns:
        A `Corpus`.
    """
    if isinstance(source, Corpus):
        return source
    if source is None or (isinstance(source, str) and source.strip().lower() == "builtin"):
        return builtin_corpus()
    if isinstance(source, str) and source.strip().lower().startswith("synthetic"):
        return MarkovCorpus.from_spec(source)
    if isinstance(source, str) and source.startswith("tfds:"):
        return tfds_corpus(source[len("tfds:"):], data_dir=data_dir, cache_dir=cache_dir,
                           text_feature=text_feature, download=download)
    if isinstance(source, (str, list, tuple)):
        return files_corpus(source, cache_dir=cache_dir)
    raise ConfigError("is not a data source keras_dp knows", variable="source",
                      received=repr(source),
                      fix="pass 'builtin', 'synthetic', 'tfds:NAME', a file path or glob, "
                          "or a keras_dp.data.Corpus")


def text_dataset_fn(source="builtin", *, split: str = "train", seq_len: int = 128,
                    global_batch_size: int, seed: int = 0, shuffle: bool = True,
                    repeat: bool = True, start_step: int = 0,
                    epoch_steps: Optional[int] = None, data_dir: Optional[str] = None,
                    cache_dir: Optional[str] = None, text_feature: Optional[str] = None,
                    download: bool = False):
    """The per-worker function behind `text_dataset`: `fn(input_context) -> tf.data.Dataset`.

    Useful to inspect what each input pipeline reads, e.g. with hand-made
    `tf.distribute.InputContext` objects. Arguments as for `text_dataset`.
    """
    from keras_dp.data.store import ensure_shards

    corpus = load_corpus(source, data_dir=data_dir, cache_dir=cache_dir,
                         text_feature=text_feature, download=download)
    layout = StreamLayout(corpus.num_tokens(corpus.check_split(split)), int(global_batch_size),
                          int(seq_len))

    def dataset_fn(input_context):
        local = ensure_shards(corpus, input_context.num_input_pipelines)
        return pipeline_dataset(local, split, layout, input_context, seed=seed,
                                shuffle=shuffle, repeat=repeat, start_step=start_step,
                                epoch_steps=epoch_steps)

    dataset_fn.corpus = corpus
    dataset_fn.layout = layout
    return dataset_fn


def text_dataset(source="builtin", *, split: str = "train", seq_len: int = 128,
                 global_batch_size: int, strategy=None, seed: int = 0,
                 data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                 shuffle: bool = True, repeat: bool = True, start_step: int = 0,
                 epoch_steps: Optional[int] = None, text_feature: Optional[str] = None,
                 download: bool = False):
    """Language-model batches, one input pipeline per worker, deterministic.

    Args:
        source: `"builtin"` (Python's documentation topics: offline, about
            465 KB), a text file / folder / glob / list of them, `"tfds:NAME"`
            (a tensorflow-datasets text dataset prepared in `data_dir`),
            `"synthetic[:vocab=16,order=1,...]"`, or a `Corpus`.
        split: `"train"` or `"validation"` (or another split of a tfds source).
        seq_len: Tokens per example; targets are the inputs shifted by one.
        global_batch_size: Sequences per step over all replicas.
        strategy: Default: the strategy in scope / of `keras_dp.scope()`.
        seed: Shuffling seed; the same seed gives the same global batches with
            any number of workers and replicas.
        data_dir: tensorflow-datasets data dir for `"tfds:"` sources.
        cache_dir: Where file and tfds sources are converted to sharded
            datasets (default `$KERAS_DP_CACHE_DIR` or `~/.cache/keras_dp`).
        shuffle: Reshuffle each stream's examples every epoch.
        repeat: Repeat forever (for `fit(steps_per_epoch=...)`); else one epoch.
        start_step: Start at this global step (resuming gives the batches an
            uninterrupted run would have seen).
        epoch_steps: Cut epochs to this many steps (a fixed validation subset).
        text_feature: The text feature of a `"tfds:"` dataset.
        download: Allow tfds to download a missing `"tfds:"` dataset.

    Returns:
        A `tf.distribute.DistributedDataset` of `(inputs, targets)`, int32
        `[per_replica_batch, seq_len]`. Its `corpus` and `layout` attributes
        tell the tokenizer, sizes and `layout.steps_per_epoch`.

    Example:

    ```python
    with keras_dp.scope() as ctx:
        ds = keras_dp.data.text_dataset(seq_len=128, global_batch_size=ctx.global_batch(32))
        model = keras_dp.models.TransformerLM.from_preset("tiny")
        model.compile(optimizer="adam")
    model.fit(ds, steps_per_epoch=ds.layout.steps_per_epoch, epochs=2)
    ```
    """
    dataset_fn = text_dataset_fn(
        source, split=split, seq_len=seq_len, global_batch_size=global_batch_size, seed=seed,
        shuffle=shuffle, repeat=repeat, start_step=start_step, epoch_steps=epoch_steps,
        data_dir=data_dir, cache_dir=cache_dir, text_feature=text_feature, download=download)
    dataset = distribute(dataset_fn, global_batch_size=global_batch_size, strategy=strategy)
    for name in ("corpus", "layout"):
        try:
            setattr(dataset, name, getattr(dataset_fn, name))
        except AttributeError:  # pragma: no cover - a strategy's dataset type without __dict__
            pass
    return dataset
