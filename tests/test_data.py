"""keras_dp.data: sharding, batch bookkeeping, determinism across worker counts,
per-epoch reshuffling, local files as tfds datasets, the offline tfds error."""

import os
import time

import numpy as np
import pytest

import keras_dp
from keras_dp import data as D
from keras_dp.cluster import resolve_cluster
from keras_dp.data.store import StoredCorpus, ensure_shards
from keras_dp.data.tokenizer import IdTokenizer

SINGLE = resolve_cluster({})


def positions_corpus(num_tokens=5_000):
    """Token k of the train split is k: every example tells where it was read."""
    return D.InMemoryCorpus("positions", {"train": np.arange(num_tokens)},
                            IdTokenizer(num_tokens))


def pipeline_batches(tf, dataset_fn, pipelines, replicas, steps):
    """Global batches (numpy) of `pipelines` input pipelines built with InputContexts."""
    per_pipeline = []
    for p in range(pipelines):
        context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                             input_pipeline_id=p, num_replicas_in_sync=replicas)
        ds = dataset_fn(context).take(steps * (replicas // pipelines))
        per_pipeline.append([(x.numpy(), y.numpy()) for x, y in ds])
    local = replicas // pipelines   # concatenated in global replica order
    return [(np.concatenate([p[s * local + r][0] for p in per_pipeline for r in range(local)]),
             np.concatenate([p[s * local + r][1] for p in per_pipeline for r in range(local)]))
            for s in range(min(len(p) for p in per_pipeline) // local)]


@pytest.mark.parametrize("pipelines", [2, 3])
def test_pipeline_shards_are_disjoint_and_cover_the_data(tf, pipelines):
    corpus = positions_corpus()
    batch, seq_len = 6, 10
    fn = D.text_dataset_fn(corpus, seq_len=seq_len, global_batch_size=batch, shuffle=False,
                           repeat=False)
    layout = fn.layout
    read = []
    for p in range(pipelines):
        context = tf.distribute.InputContext(pipelines, p, pipelines)
        tokens = set()
        for x, y in fn(context):
            x, y = x.numpy(), y.numpy()
            np.testing.assert_array_equal(y, x + 1)  # next-token targets
            tokens.update(x.ravel().tolist())
            tokens.update(y.ravel().tolist())
        read.append(tokens)
    for a in range(pipelines):
        for b in range(a + 1, pipelines):
            assert not read[a] & read[b], (a, b)
    # Together they read every token of every stream's whole examples.
    expected = set()
    for stream in range(batch):
        start = layout.bound(stream)
        expected.update(range(start, start + layout.steps_per_epoch * seq_len + 1))
    assert set().union(*read) == expected
    # ... which is all of the data but the streams' short tails.
    assert len(expected) > corpus.num_tokens("train") - batch * 2 * seq_len


def test_global_batch_bookkeeping(tf):
    strategy = keras_dp.get_strategy("mirrored", cluster=SINGLE,
                                     devices=[f"/cpu:{i}" for i in range(4)])
    assert D.global_batch_size(8, strategy) == 32
    assert D.per_replica_batch_size(32, 4) == 8
    with pytest.raises(keras_dp.ConfigError, match="Received: global_batch_size=30"):
        D.per_replica_batch_size(30, 4)
    with pytest.raises(keras_dp.ConfigError, match="divide evenly over 4 replicas"):
        D.text_dataset("synthetic:tokens=3000", seq_len=8, global_batch_size=30,
                       strategy=strategy)
    assert D.steps_per_epoch(100, 32) == 3
    with pytest.raises(keras_dp.ConfigError, match="do not fill one global batch"):
        D.steps_per_epoch(10, 32)
    with pytest.raises(keras_dp.ConfigError, match="too few for a global batch"):
        D.StreamLayout(1000, 64, 16)
    layout = D.StreamLayout(10_000, 8, 16)
    assert layout.steps_per_epoch == (10_000 // 8 - 1) // 16

    # Four replicas get per-replica batches of 8 that add up to the global batch of 32.
    corpus = positions_corpus(20_000)
    ds = D.text_dataset(corpus, seq_len=16, global_batch_size=32, strategy=strategy,
                        shuffle=False)
    inputs, targets = next(iter(ds))
    local = strategy.experimental_local_results(inputs)
    assert [tuple(t.shape) for t in local] == [(8, 16)] * 4
    one = D.text_dataset(corpus, seq_len=16, global_batch_size=32,
                         strategy=tf.distribute.get_strategy(), shuffle=False)
    reference, _ = next(iter(one))
    np.testing.assert_array_equal(np.concatenate([t.numpy() for t in local]), reference.numpy())


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "shard", "worker", "batch", "token", "\n"]
    for i in range(3):
        (folder / f"part{i}.txt").write_text(" ".join(rng.choice(words, 4000)))
    return folder


@pytest.mark.parametrize("source", ["builtin", "synthetic", "files"])
def test_same_global_batches_for_1_2_and_4_pipelines(tf, source, text_files, tmp_path):
    spec = {"builtin": "builtin", "synthetic": "synthetic:tokens=40000",
            "files": str(text_files / "*.txt")}[source]
    # Short epochs (about 30-60 steps), so the comparison crosses an epoch boundary.
    seq_len, batch = {"builtin": (256, 64), "synthetic": (64, 16), "files": (64, 16)}[source]
    fn = D.text_dataset_fn(spec, seq_len=seq_len, global_batch_size=batch, seed=5,
                           cache_dir=str(tmp_path))
    steps = fn.layout.steps_per_epoch + 2  # crosses an epoch boundary
    one = pipeline_batches(tf, fn, 1, 1, steps)
    for pipelines, replicas in ((2, 2), (4, 4), (2, 4)):
        other = pipeline_batches(tf, fn, pipelines, replicas, steps)
        assert len(other) == steps
        for step, ((x1, y1), (x2, y2)) in enumerate(zip(one, other)):
            np.testing.assert_array_equal(x1, x2, err_msg=f"{pipelines} pipelines, step {step}")
            np.testing.assert_array_equal(y1, y2)
    # Another seed gives other batches (the comparison above can fail).
    other_seed = D.text_dataset_fn(spec, seq_len=seq_len, global_batch_size=batch, seed=6,
                                   cache_dir=str(tmp_path))
    assert not np.array_equal(pipeline_batches(tf, other_seed, 1, 1, 1)[0][0], one[0][0])


@pytest.mark.slow
def test_mirrored_strategy_sees_the_same_global_batches(tf):
    strategy = keras_dp.get_strategy("mirrored", cluster=SINGLE,
                                     devices=["/cpu:0", "/cpu:1"])
    kwargs = dict(seq_len=16, global_batch_size=8, seed=1)
    two = iter(D.text_dataset("builtin", strategy=strategy, **kwargs))
    one = iter(D.text_dataset("builtin", strategy=tf.distribute.get_strategy(), **kwargs))
    for _ in range(3):
        x2, _ = next(two)
        x1, _ = next(one)
        merged = np.concatenate([t.numpy() for t in strategy.experimental_local_results(x2)])
        np.testing.assert_array_equal(merged, x1.numpy())


def test_reshuffled_every_epoch_and_resumable(tf):
    corpus = positions_corpus(2_000)
    fn = D.text_dataset_fn(corpus, seq_len=10, global_batch_size=4, seed=0)
    steps = fn.layout.steps_per_epoch
    batches = pipeline_batches(tf, fn, 1, 1, 3 * steps)
    epochs = [np.stack([x for x, _ in batches[e * steps:(e + 1) * steps]]) for e in range(3)]
    for a, b in ((0, 1), (1, 2)):
        assert not np.array_equal(epochs[a], epochs[b])  # a new order ...
        # ... of the same examples, each row (stream) keeping its own examples.
        for row in range(4):
            assert sorted(epochs[a][:, row, 0]) == sorted(epochs[b][:, row, 0])
    assert len(set(epochs[0][:, 0, 0])) == steps  # no repeats within an epoch
    # start_step resumes the same sequence of batches.
    resumed = D.text_dataset_fn(corpus, seq_len=10, global_batch_size=4, seed=0,
                                start_step=steps + 3)
    later = pipeline_batches(tf, resumed, 2, 2, 4)
    for i in range(4):
        np.testing.assert_array_equal(later[i][0], batches[steps + 3 + i][0])
    # Without shuffling, every epoch is the same, in order.
    ordered = pipeline_batches(tf, D.text_dataset_fn(corpus, seq_len=10, global_batch_size=4,
                                                     shuffle=False), 1, 1, 2 * steps)
    np.testing.assert_array_equal(ordered[0][0], ordered[steps][0])
    assert ordered[1][0][0, 0] == ordered[0][0][0, 0] + 10


def test_local_files_become_a_sharded_tfds_dataset(tf, text_files, tmp_path):
    corpus = D.load_corpus(str(text_files / "*.txt"), cache_dir=str(tmp_path))
    assert isinstance(corpus, StoredCorpus)
    assert corpus.num_shards == 16
    files = sorted(os.listdir(os.path.join(corpus.path, "tfds", "keras_dp_text", "1.0.0")))
    assert sum(".tfrecord-" in f and "-train." in f for f in files) == 16
    joined = b"\n\n".join((text_files / f"part{i}.txt").read_bytes().strip() for i in range(3))
    expected = D.split_train_validation(np.frombuffer(joined, np.uint8))
    for split in ("train", "validation"):
        np.testing.assert_array_equal(corpus.tokens(split), expected[split])
    # Converted once: a second load reuses the folder.
    stamp = os.path.getmtime(os.path.join(corpus.path, "corpus.json"))
    again = D.load_corpus(str(text_files / "*.txt"), cache_dir=str(tmp_path))
    assert again.path == corpus.path and os.path.getmtime(
        os.path.join(again.path, "corpus.json")) == stamp
    # Each of 4 pipelines reads only the shard files of its token range.
    layout = D.StreamLayout(corpus.num_tokens("train"), 8, 16)
    reads = [set(corpus.files_for("train", *layout.token_range(*layout.pipeline_streams(p, 4))))
             for p in range(4)]
    assert all(len(r) <= 16 // 4 + 1 for r in reads)
    assert len(set().union(*reads)) == 16
    # More pipelines than shards: re-split into enough shard files, same tokens.
    bigger = ensure_shards(corpus, 20)
    assert bigger.num_shards == 32 and bigger.path != corpus.path
    np.testing.assert_array_equal(bigger.tokens("train"), corpus.tokens("train"))


def test_tfds_dataset_with_one_shard_is_resplit_for_two_pipelines(tf, tmp_path):
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path / "tfds")
    text = "To be, or not to be, that is the question. " * 300
    tfds.dataset_builders.store_as_tfds_dataset(
        name="one_doc_corpus", version="1.0.0",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        split_datasets={"train": [(0, {"text": text})],
                        "validation": [(0, {"text": text[:3000]})]},
        data_dir=data_dir, disable_shuffling=True)
    fn = D.text_dataset_fn("tfds:one_doc_corpus", data_dir=data_dir,
                           cache_dir=str(tmp_path / "cache"), seq_len=16, global_batch_size=4)
    assert fn.corpus.num_tokens("train") == len(text.strip())
    assert fn.corpus.num_tokens("validation") == 2999  # the stripped document
    batches = pipeline_batches(tf, fn, 2, 2, 2)
    assert bytes(batches[0][0][0].astype(np.uint8)).decode() in text


def test_missing_tfds_dataset_fails_fast_offline(tmp_path):
    started = time.time()
    with pytest.raises(keras_dp.ConfigError) as caught:
        D.load_corpus("tfds:tiny_shakespeare", data_dir=str(tmp_path))
    assert time.time() - started < 30  # tfds's own download loop retries for ~205 s
    message = str(caught.value)
    assert "tfds build tiny_shakespeare --data_dir" in message
    assert str(tmp_path) in message and "Received: source=tfds:tiny_shakespeare" in message
    with pytest.raises(keras_dp.ConfigError, match="no dataset of that name"):
        D.load_corpus("tfds:surely_not_a_dataset_name", data_dir=str(tmp_path))


def test_bad_sources_say_what_to_do(tmp_path):
    with pytest.raises(keras_dp.ConfigError, match="names no readable file"):
        D.load_corpus(str(tmp_path / "missing*.txt"))
    with pytest.raises(keras_dp.ConfigError, match="bad synthetic corpus option"):
        D.load_corpus("synthetic:colour=blue")
    with pytest.raises(keras_dp.ConfigError, match="has no split 'test'"):
        D.text_dataset_fn("builtin", split="test", global_batch_size=4)


def test_builtin_corpus_and_tokenizer():
    corpus = D.load_corpus("builtin")
    train, validation = corpus.num_tokens("train"), corpus.num_tokens("validation")
    assert train > 300_000 and 0.08 < validation / (train + validation) < 0.12
    tokenizer = D.ByteTokenizer()
    text = "naïve café: ünïcode ✓"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode([0xE2, 0x9C]) == "\ufffd"  # cut multi-byte character
    assert "with_stmt" not in tokenizer.decode(corpus.tokens("validation")[:0])
    synthetic = D.MarkovCorpus(vocab=4, order=1, tokens=50_000, alpha=1.0, seed=3)
    counts = np.bincount(synthetic.tokens("train"), minlength=4)
    assert 0 < synthetic.entropy_rate < np.log(4)
    assert counts.min() > 0


def test_counts_are_checked_one_way_everywhere(tf):
    """`errors.whole_number`: batch sizes (data, Context), TrainConfig, StreamLayout, schedules."""
    from keras_dp.errors import whole_number
    from keras_dp.train_config import TrainConfig

    assert whole_number(np.int64(4), "n") == 4 and whole_number(4.0, "n") == 4
    for bad in (True, 2.5, "3", 0, None):
        with pytest.raises(keras_dp.ConfigError, match=r"n: must be a whole number >= 1"):
            whole_number(bad, "n")
    for call in (lambda: D.global_batch_size(0, tf.distribute.get_strategy()),
                 lambda: D.per_replica_batch_size(True, 2),
                 lambda: TrainConfig(steps=2.5).check(),
                 lambda: D.StreamLayout(10_000, 0, 8)):
        with pytest.raises(keras_dp.ConfigError, match="must be a whole number >= 1"):
            call()
