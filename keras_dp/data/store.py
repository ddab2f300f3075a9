"""Local text files and tensorflow-datasets sources, converted once into a sharded tfds
dataset in the cache. See docs/data_and_models.md ("Converted sources")."""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from keras_dp.data.corpus import Corpus, join_documents, split_train_validation
from keras_dp.data.tokenizer import ByteTokenizer, tokenizer_from_config
from keras_dp.errors import ConfigError

log = logging.getLogger("keras_dp")

CORPUS_FILE = "corpus.json"
FORMAT_VERSION = 1
DEFAULT_SHARDS = 16
_TFDS_NAME = "keras_dp_text"
_TFDS_VERSION = "1.0.0"


def _in_order(builder, split: str):
    """The tfds split's examples in file order, read once (no cache, no shuffling)."""
    import tensorflow_datasets as tfds

    return builder.as_dataset(split=split, shuffle_files=False, read_config=tfds.ReadConfig(
        try_autocache=False, interleave_cycle_length=1))


class StoredCorpus(Corpus):
    """The sharded tfds dataset `write_store` wrote in folder `path`, as a corpus."""

    def __init__(self, path: str):
        self.path = path
        with open(os.path.join(path, CORPUS_FILE), encoding="utf-8") as handle:
            self.meta = json.load(handle)
        self.name = self.meta["name"]
        self.tokenizer = tokenizer_from_config(self.meta.get("tokenizer"))

    @property
    def splits(self) -> Sequence[str]:
        return tuple(self.meta["splits"])

    @property
    def num_shards(self) -> int:
        return int(self.meta["num_shards"])

    def num_tokens(self, split: str) -> int:
        return int(self.meta["splits"][self.check_split(split)]["tokens"])

    @functools.cached_property
    def builder(self):
        import tensorflow_datasets as tfds

        return tfds.builder_from_directory(
            os.path.join(self.path, "tfds", _TFDS_NAME, _TFDS_VERSION))

    def files_for(self, split: str, start: int, stop: int) -> List[str]:
        """The shard files that hold tokens `[start, stop)` of `split`."""
        instructions = self.builder.info.splits[self._chunks(split, start, stop)[0]]
        return [os.path.basename(str(i.filename)) for i in instructions.file_instructions]

    def _chunks(self, split: str, start: int, stop: int):
        """The tfds slice of the chunks holding tokens `[start, stop)`, their count, and
        where `start` is in the first."""
        size = int(self.meta["splits"][self.check_split(split)]["chunk_size"])
        first, last = start // size, -(-stop // size)
        return f"{split}[{first}:{last}]", last - first, start - first * size

    def token_dataset(self, split: str, start: int, stop: int, input_context=None):
        chunks, count, offset = self._chunks(split, start, stop)
        return (_in_order(self.builder, chunks).map(lambda example: example["tokens"])
                .ragged_batch(count)
                .map(lambda ragged: ragged.flat_values[offset:offset + stop - start]))

    def tokens(self, split: str) -> np.ndarray:
        return self.token_dataset(split, 0, self.num_tokens(split)).get_single_element().numpy()


def write_store(path: str, name: str, splits: Mapping[str, np.ndarray], *, num_shards: int,
                source: dict, tokenizer=None) -> StoredCorpus:
    """Writes `splits` (name -> token array; empty ones left out) as a sharded tfds dataset,
    in a temporary folder renamed to `path` (or dropped when another process got there first)."""
    import tensorflow_datasets as tfds

    splits = {k: np.asarray(v, dtype=np.uint8).reshape(-1) for k, v in splits.items()
              if len(v)}
    if not splits:
        raise ConfigError(f"the source {name!r} holds no text", variable="source",
                          received=name, fix="point it at non-empty text files")
    # tfds writes the same number of shards for every split: no more than the
    # smallest split has chunks.
    shards = max(1, min([num_shards] + [len(v) for v in splits.values()]))
    meta_splits, generators = {}, {}
    for split, stream in splits.items():
        size = int(min(64 * 1024, -(-len(stream) // shards)))  # at least `shards` chunks
        count = -(-len(stream) // size)
        meta_splits[split] = {"tokens": int(len(stream)), "chunk_size": size, "chunks": count}
        generators[split] = [(i, {"tokens": stream[i * size:(i + 1) * size]})
                             for i in range(count)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".writing-", dir=os.path.dirname(path))
    started = time.time()
    try:
        tfds.dataset_builders.store_as_tfds_dataset(
            name=_TFDS_NAME, version=_TFDS_VERSION,
            features=tfds.features.FeaturesDict(
                {"tokens": tfds.features.Tensor(shape=(None,), dtype=np.uint8)}),
            split_datasets=generators, data_dir=os.path.join(temporary, "tfds"),
            description=f"keras_dp token chunks of {name}", file_format="tfrecord",
            download_config=tfds.download.DownloadConfig(num_shards=shards),
            disable_shuffling=True)
        shutil.rmtree(os.path.join(temporary, "tfds", "downloads"), ignore_errors=True)
        meta = {"format": FORMAT_VERSION, "name": name, "source": source, "num_shards": shards,
                "splits": meta_splits, "tokenizer": (tokenizer or ByteTokenizer()).get_config()}
        with open(os.path.join(temporary, CORPUS_FILE), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2)
        try:
            os.rename(temporary, path)
        except OSError:
            if not os.path.exists(os.path.join(path, CORPUS_FILE)):
                raise
            log.info("keras_dp: %s was converted by another process meanwhile", name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    log.info("keras_dp: converted %s into %d shard(s) in %.1f s: %s", name, shards,
             time.time() - started, path)
    return StoredCorpus(path)


def open_or_write(cache_dir, name, source, num_shards, make_splits, tokenizer=None):
    """`<cache>/text/<name>-<fingerprint of source>-<N>shards`, written from `make_splits()`
    if missing."""
    cache_dir = cache_dir or os.environ.get("KERAS_DP_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_dp")
    key = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, "source": source},
                                    sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:40] or "corpus"
    path = os.path.join(cache_dir, "text", f"{slug}-{key}-{num_shards}shards")
    if os.path.exists(os.path.join(path, CORPUS_FILE)):
        return StoredCorpus(path)
    return write_store(path, name, make_splits(), num_shards=num_shards, source=source,
                       tokenizer=tokenizer)


def ensure_shards(corpus: Corpus, num_pipelines: int) -> Corpus:
    """A copy of a stored corpus with at least `num_pipelines` shard files (same tokens)."""
    if (not isinstance(corpus, StoredCorpus) or corpus.num_shards >= num_pipelines
            or min(corpus.num_tokens(s) for s in corpus.splits) < num_pipelines):
        return corpus  # (or it cannot split further; token ranges still stay disjoint)
    shards = -(-num_pipelines // DEFAULT_SHARDS) * DEFAULT_SHARDS
    return open_or_write(os.path.dirname(os.path.dirname(corpus.path)), corpus.name,
                         corpus.meta["source"], shards,
                         lambda: {s: corpus.tokens(s) for s in corpus.splits},
                         tokenizer=corpus.tokenizer)


def expand_files(patterns: Union[str, Sequence[str]]) -> List[str]:
    """Sorted absolute paths of the files that `patterns` (paths or globs) name."""
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    paths: List[str] = []
    for item in items:
        item = os.path.expanduser(str(item))
        pattern = os.path.join(item, "**", "*") if os.path.isdir(item) else item
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not matches:
            raise ConfigError("names no readable file", variable="source", received=item,
                              fix="pass an existing text file, a folder, or a glob such as "
                                  "'data/*.txt'; or 'builtin' for the embedded corpus")
        paths.extend(os.path.abspath(m) for m in matches)
    return sorted(dict.fromkeys(paths))


def files_corpus(patterns, *, cache_dir: Optional[str] = None) -> StoredCorpus:
    """Local text files (paths, folders or globs; read as bytes in path order) as a stored
    corpus split by `split_train_validation`."""
    paths = expand_files(patterns)
    stats = [[p, os.path.getsize(p), int(os.path.getmtime(p))] for p in paths]
    name = paths[0] if len(paths) == 1 else f"{len(paths)} files in {os.path.dirname(paths[0])}"
    return open_or_write(cache_dir, name, {"kind": "files", "files": stats}, DEFAULT_SHARDS,
                         lambda: split_train_validation(join_documents(
                             pathlib.Path(p).read_bytes() for p in paths)))


def _not_prepared(spec: str, data_dir: Optional[str], detail: str) -> ConfigError:
    where = data_dir or "tensorflow-datasets' default data_dir (~/tensorflow_datasets or "\
        "$TFDS_DATA_DIR)"
    return ConfigError(
        f"the tensorflow-datasets dataset {spec!r} is not prepared in {where} ({detail}), "
        "and keras_dp does not download data at run time",
        variable="source", received=f"tfds:{spec}",
        fix=f"on a machine with network access run `tfds build {spec.split(':')[0]} "
            f"--data_dir DIR` (pip install tensorflow-datasets), copy DIR here and pass "
            "data_dir=DIR (keras-dp train --data-dir DIR); or pass download=True on a "
            "machine with network access")


def tfds_corpus(spec: str, *, data_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                text_feature: Optional[str] = None, download: bool = False) -> StoredCorpus:
    """A prepared tensorflow-datasets text dataset, converted into a sharded corpus.

    Args:
        spec: `NAME`, `NAME/CONFIG` or `NAME:VERSION` as tfds writes them.
        data_dir, cache_dir, text_feature, download: As for `text_dataset`.

    Raises:
        ConfigError: at once (no download retries) when the dataset is not
            prepared in `data_dir`, with the command that prepares it.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(spec, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise _not_prepared(spec, data_dir, "no dataset of that name is registered or "
                                            "stored there") from None
    except (ValueError, OSError) as exc:
        raise _not_prepared(spec, data_dir, str(exc).splitlines()[0]) from None
    if not builder.is_prepared():
        if not download:
            raise _not_prepared(spec, data_dir, f"nothing in {builder.data_dir}")
        builder.download_and_prepare()
    features = builder.info.features
    texts = [k for k, v in features.items() if isinstance(v, tfds.features.Text)]
    feature = text_feature or (texts[0] if len(texts) == 1 else None)
    if feature is None or feature not in features:
        raise ConfigError(
            f"cannot tell which feature of tfds:{spec} holds the text (text features: "
            f"{texts or 'none'})", variable="text_feature", received=text_feature,
            fix="pass text_feature=NAME (keras-dp train --text-feature NAME)")
    source_splits = {name: int(info.num_examples) for name, info in builder.info.splits.items()}
    source = {"kind": "tfds", "name": builder.info.full_name,
              "data_dir": os.path.abspath(str(builder.data_dir)), "feature": feature,
              "splits": source_splits}

    def make_splits() -> Dict[str, np.ndarray]:
        streams = {split: join_documents(bytes(example[feature]) for example in
                                         tfds.as_numpy(_in_order(builder, split)))
                   for split in source_splits}
        if "validation" not in streams and "train" in streams:
            streams.update(split_train_validation(streams["train"]))
        return streams

    return open_or_write(cache_dir, f"tfds:{builder.info.full_name}", source, DEFAULT_SHARDS,
                         make_splits)
