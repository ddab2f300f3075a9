"""Sharded, deterministic input pipelines for data-parallel training.

`text_dataset` gives language-model batches with one input pipeline per worker, the same
global batches for any number of workers; `distribute` does the same for your own
`dataset_fn(input_context)`. See docs/data_and_models.md.
"""

from __future__ import annotations

from typing import Optional

from keras_dp.data.batching import distribute, global_batch_size, per_replica_batch_size, \
    steps_per_epoch
from keras_dp.data.builtin import builtin_corpus
from keras_dp.data.corpus import Corpus, InMemoryCorpus, split_train_validation
from keras_dp.data.pipeline import StreamLayout, pipeline_dataset
from keras_dp.data.store import ensure_shards, files_corpus, tfds_corpus
from keras_dp.data.synthetic import MarkovCorpus
from keras_dp.data.tokenizer import ByteTokenizer, IdTokenizer
from keras_dp.errors import ConfigError

__all__ = [
    "ByteTokenizer", "Corpus", "IdTokenizer", "InMemoryCorpus", "MarkovCorpus", "StreamLayout",
    "distribute", "global_batch_size", "load_corpus", "per_replica_batch_size",
    "split_train_validation", "steps_per_epoch", "text_dataset", "text_dataset_fn",
]


def load_corpus(source="builtin", *, data_dir: Optional[str] = None,
                cache_dir: Optional[str] = None, text_feature: Optional[str] = None,
                download: bool = False) -> Corpus:
    """Resolves a source to a `Corpus`.

    Args:
        source, data_dir, cache_dir, text_feature, download: As for `text_dataset`.

    Returns:
        A `Corpus` (`source` itself when it is one).

    Raises:
        ConfigError: `source` is of no known kind.
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
                    epoch_steps: Optional[int] = None, **corpus_options):
    """The per-worker function behind `text_dataset`: `fn(input_context) -> tf.data.Dataset`.

    Arguments as for `text_dataset` (`corpus_options` go to `load_corpus`). Its `corpus`
    and `layout` attributes are the `Corpus` and its `StreamLayout`.
    """
    corpus = load_corpus(source, **corpus_options)
    layout = StreamLayout(corpus.num_tokens(corpus.check_split(split)), global_batch_size,
                          seq_len)

    def dataset_fn(input_context):
        local = ensure_shards(corpus, input_context.num_input_pipelines)
        return pipeline_dataset(local, split, layout, input_context, seed=seed,
                                shuffle=shuffle, repeat=repeat, start_step=start_step,
                                epoch_steps=epoch_steps)

    dataset_fn.corpus = corpus
    dataset_fn.layout = layout
    return dataset_fn


def text_dataset(source="builtin", *, global_batch_size: int, strategy=None, **options):
    """Language-model batches, one input pipeline per worker, deterministic.

    Args:
        source: `"builtin"` (Python's documentation topics, offline), a text file,
            folder, glob or list of them, `"tfds:NAME"` (a tensorflow-datasets text
            dataset prepared in `data_dir`), `"synthetic[:vocab=16,order=1,...]"`,
            or a `Corpus`.
        global_batch_size: Sequences per step over all replicas.
        strategy: Default: the strategy in scope / of `keras_dp.scope()`.
        **options: `split="train"`, `seq_len=128`, `seed=0`, `shuffle=True`,
            `repeat=True`, `start_step=0`, `epoch_steps=None` and `load_corpus`'s
            `data_dir`, `cache_dir`, `text_feature`, `download`; see
            docs/data_and_models.md.

    Returns:
        A `tf.distribute.DistributedDataset` of `(inputs, targets)`, int32
        `[per_replica_batch, seq_len]`, with the `corpus` and `layout` attributes
        of `text_dataset_fn` (`layout.steps_per_epoch`).
    """
    dataset_fn = text_dataset_fn(source, global_batch_size=global_batch_size, **options)
    dataset = distribute(dataset_fn, global_batch_size=global_batch_size, strategy=strategy)
    dataset.corpus, dataset.layout = dataset_fn.corpus, dataset_fn.layout
    return dataset
