"""tf.data pipelines over a record set written by `tools.make_tfrecords`.

Images leave here as uint8 [B, H, W, C] (C = 1 by default: the model replicates gray to RGB on
the device, so the host moves, caches and the device augments a third of the bytes) with
float32 labels [B]; augmentation and scaling happen on the accelerator, not here.

Training, records not cached, per epoch:  shard files of this input pipeline -> shuffle files ->
parallel interleave -> shuffle serialized records -> batch; then skip the batches a resumed run
already consumed -> parse + decode the whole batch in one vectorized call (parallel) -> prefetch.
Training, decoded split cached in memory (when it fits `cache_budget_mb`): read and decode once
in large batches into one tensor; per epoch a permutation of it, one gather per batch; later
epochs never touch disk or decoder.  Every epoch draws its order from (seed, epoch), so resume
is exact.
Evaluation: every record exactly once, in file order, the last partial batch kept.

`dataset_fn` gives the `input_context` function for `distribute_datasets_from_function`: each
input pipeline reads a disjoint subset of the shard files and batches per replica.
"""
import contextlib
import dataclasses
import re

import tensorflow as tf

from cxr_fast.data import schema
from cxr_fast.errors import InputError
from cxr_fast.tasks import task as task_lib

AUTOTUNE = tf.data.AUTOTUNE
_SIZE_MESSAGE = "cxr_fast: records whose image size differs from manifest.json (first files):"
_COUNT_MESSAGE = "cxr_fast: the train shards hold fewer records than manifest.json counts"


def _split_files(record_set, split):
    files = record_set.files.get(split)
    if not files:
        raise InputError(f"{record_set.root} has no {split} shards ({schema.shard_pattern(split)}); "
                         f"write the record set with a non-zero {split} fraction")
    return files


def _decoder(record_set, config, with_metadata=False):
    """A function of a batch of serialized records -> (uint8 images, float32 labels[, metadata]).

    Labels are the record set's task's: [B] for a binary set, [B, findings] (1, 0 or -1: ignored)
    for a multi-label set.
    """
    height, width = record_set.stored_size
    encoding = record_set.encoding
    task = task_lib.for_record_set(record_set)
    keys = [schema.ENCODED, schema.LABEL, schema.HEIGHT, schema.WIDTH, schema.CHANNELS, schema.FILENAME]
    if with_metadata:
        keys.append(schema.PATIENT)

    def decode(serialized):
        features = schema.parse_batch(serialized, keys, len(task.findings))
        match = ((features[schema.HEIGHT] == height) & (features[schema.WIDTH] == width)
                 & (features[schema.CHANNELS] == 1))
        if encoding == "raw":
            match &= tf.strings.length(features[schema.ENCODED]) == height * width
        check = tf.debugging.Assert(tf.reduce_all(match),
                                    [_SIZE_MESSAGE, tf.boolean_mask(features[schema.FILENAME], ~match)], summarize=3)
        with tf.control_dependencies([check]):
            images = schema.decode_images(features[schema.ENCODED], encoding, height, width)
        if (height, width) != (config.image_size, config.image_size):
            images = tf.image.resize(images, [config.image_size, config.image_size], antialias=True)
            images = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
        labels = task.labels(features[schema.LABEL], features.get(schema.FINDINGS))
        if not with_metadata:
            return images, labels
        return images, labels, {"filename": features[schema.FILENAME], "patient": features[schema.PATIENT]}

    return decode


def _with_channels(ds, config):
    """Replicates gray to RGB on the host when asked (channels=3); by default the model does it."""
    if config.channels == 1:
        return ds
    return ds.map(lambda images, labels, *rest: (tf.image.grayscale_to_rgb(images), labels, *rest),
                  num_parallel_calls=AUTOTUNE)


def _options(config, deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = True
    if config.ram_budget_mb:
        options.autotune.ram_budget = config.ram_budget_mb * 2**20
    if config.num_threads:
        options.threading.private_threadpool_size = config.num_threads
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_parallelization = True
    # Sharding is done here, by file, per input pipeline; never let tf.distribute re-shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def cache_fits(record_set, config, split="train"):
    """Whether the decoded split fits the cache budget (`cache=auto`)."""
    decoded = record_set.num_records(split) * config.image_size**2  # cached with one channel
    return config.cache == "memory" or (config.cache == "auto" and decoded <= config.cache_budget_mb * 2**20)


def epoch_seed(seed, epoch, index):
    """The seed of `epoch` in input pipeline `index`: a stateless hash, so any epoch can be rebuilt."""
    return _hash(tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64) * 65536 + index)


def _hash(seed, number):
    return tf.random.stateless_uniform([], seed=tf.stack([seed, tf.cast(number, tf.int64)]), minval=None,
                                       maxval=None, dtype=tf.int64)


def _record_epochs(files, records, config, batch, steps):
    """epoch seed -> that epoch's `steps` batches of serialized records (decoded later, per batch).

    An epoch reads passes over the files, each pass with its own order (files shuffled, then
    records through the shuffle buffer); only an input pipeline whose files hold fewer than
    `steps` batches starts a second pass.  The passes are as many as the manifest's `records`
    need, plus one: files that hold fewer records than it says end the epoch short (an error,
    `readable_errors`) instead of an endless search for records.  Not `shuffle().repeat()`: its
    fused kernel fills the buffer across passes, reading up to `shuffle_buffer` records ahead,
    and an epoch that stops after `steps` batches throws that reading away (measured: 3x slower
    on raw records).
    Batching is serial so that nothing reads ahead past the epoch's last batch.
    """
    def one_pass(seed):
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16), num_parallel_calls=AUTOTUNE)
        return ds.shuffle(max(config.shuffle_buffer, 1), seed=seed)

    passes_needed = -(-steps * batch // records) + 1

    def epoch(seed):
        passes = tf.data.Dataset.range(passes_needed).map(lambda number: _hash(seed, number))
        return passes.flat_map(one_pass).batch(batch, drop_remainder=True).take(steps)

    return epoch


def _cached_epochs(files, records, decode, config, batch, steps):
    """epoch seed -> that epoch's `steps` batches, gathered from the decoded split held in memory.

    The split is read and decoded once (large vectorized batches) into one tensor; every epoch
    is a fresh uniform permutation of it (as many as the epoch needs), and each batch is one
    gather.  A shuffle buffer of single images instead costs tf.data's per-element overhead
    64 times per batch (measured here: 2.5x fewer images/s on a Kermany-sized set).  Building
    the tensor (unbatch, then one batch of the whole split) briefly holds the split twice.
    """
    table = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE)
    table = table.batch(config.decode_batch).map(decode, num_parallel_calls=AUTOTUNE).unbatch().batch(records).cache()
    count = steps * batch
    permutations = -(-count // records)

    def gathered(order, images, labels):
        check = tf.debugging.Assert(tf.equal(tf.shape(images)[0], records), [_COUNT_MESSAGE], summarize=1)
        with tf.control_dependencies([check]):
            return tf.data.Dataset.from_tensor_slices(order).map(
                lambda rows: (tf.gather(images, rows), tf.gather(labels, rows)), num_parallel_calls=AUTOTUNE)

    def epoch(seed):
        keys = tf.random.stateless_uniform([permutations, records], seed=tf.stack([seed, tf.constant(0, tf.int64)]))
        order = tf.reshape(tf.reshape(tf.argsort(keys, axis=1), [-1])[:count], [steps, batch])
        # files that hold no record give no table, so the stream ends (see `readable_errors`)
        return table.flat_map(lambda images, labels: gathered(order, images, labels))

    return epoch


def train_dataset(record_set, config, input_context=None, epochs=None, start=(0, 0), steps_per_epoch=0):
    """Shuffled training batches of (uint8 images, float32 labels), per replica; endless by default.

    Epoch e's order is a pure function of (seed, e, input pipeline): each epoch draws its order
    from its own stateless seed, so a run resumed at `start` = (epoch, global step in the epoch)
    rebuilds the stream from that epoch and skips the batches already consumed, and reads what
    the uninterrupted run would have read.  Each epoch is exactly `steps_per_epoch` global steps
    (0: the trainer's default, the training records // the global batch, at least 1): a pipeline
    feeding R replicas yields R per-replica batches per step, so whatever the replica count an
    epoch is one pass over the pipeline's files and holds no record twice, unless those files
    hold fewer records than the epoch needs (then it starts a new pass in a new order).

    With `config.data_service` the pipeline up to the finished batch runs on the tf.data service
    (never cached there: the service is for data that one host cannot decode fast enough) and
    its dispatcher splits the shard files among service workers as they ask, so input pipelines
    do not shard by file here, every pipeline defines the same dataset, and the order is not
    reproducible (README: resume is exact without the service).
    """
    files = list(_split_files(record_set, "train"))
    pipelines, index, batch, local = 1, 0, config.global_batch_size, 1
    if input_context is not None:
        if not config.data_service:
            pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) < pipelines:
            raise InputError(f"{record_set.root} has {len(files)} train shards for {pipelines} input pipelines; "
                             f"write it again with tools.make_tfrecords --min_shards={10 * pipelines} (10 per host)")
        replicas = input_context.num_replicas_in_sync
        if config.global_batch_size % replicas:
            raise InputError(f"--batch_size={config.global_batch_size} must be a multiple of the "
                             f"{replicas} replicas in sync")
        batch = input_context.get_per_replica_batch_size(config.global_batch_size)
        local = replicas // input_context.num_input_pipelines  # replicas this pipeline feeds, one batch each per step
    files = files[index::pipelines]
    decode = _decoder(record_set, config)
    if config.data_service:
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=config.seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16), num_parallel_calls=AUTOTUNE,
                           deterministic=False)
        ds = ds.shuffle(max(config.shuffle_buffer, 1), seed=config.seed).repeat(epochs)  # each epoch a full pass
        ds = ds.batch(batch, drop_remainder=True).map(decode, num_parallel_calls=AUTOTUNE)
        ds = _with_channels(ds, config).with_options(_options(config, deterministic=False))
        # DYNAMIC sharding ("distributed_epoch"): the dispatcher hands shard files to service workers
        # as they ask, and each element goes to exactly one consumer of the job.
        return ds.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=config.data_service,
            job_name=config.service_job)).prefetch(AUTOTUNE)
    # An epoch of this pipeline: one per-replica batch for each of its replicas per global step.
    steps = local * (steps_per_epoch or max(1, record_set.num_records("train") // config.global_batch_size))
    cached, records = cache_fits(record_set, config), sum(record_set.records[f] for f in files)
    if not records:
        raise InputError(f"{record_set.root}: the train shards of input pipeline {index} hold no records "
                         "(manifest.json); write the record set again")
    if cached:
        epoch = _cached_epochs(files, records, decode, config, batch, steps)
    else:
        epoch = _record_epochs(files, records, config, batch, steps)
    first, skip = start
    last = tf.int64.max if epochs is None else first + epochs
    # An epoch that ends short (files holding fewer records than the manifest says) is an error, not
    # the start of the next one: endless empty epochs would spin forever.
    ds = tf.data.Dataset.range(first, last).flat_map(lambda number: epoch(epoch_seed(config.seed, number, index)).apply(
        tf.data.experimental.assert_cardinality(steps)))
    ds = ds.skip(skip * local)
    if not cached:
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
    ds = _with_channels(ds, config).with_options(_options(config, deterministic=True))
    return ds.prefetch(AUTOTUNE)


def eval_dataset(record_set, split, config, with_metadata=False, batch_size=None):
    """Every record of `split` exactly once, in file order, the last partial batch kept.

    With `with_metadata` each element is (images, labels, {"filename", "patient"}), for
    predictions files and per-patient metrics.
    """
    files = _split_files(record_set, split)
    decode = _decoder(record_set, config, with_metadata)
    ds = tf.data.TFRecordDataset(list(files), buffer_size=1 << 22)
    ds = ds.batch(batch_size or config.global_batch_size).map(decode, num_parallel_calls=AUTOTUNE)
    return _with_channels(ds, config).prefetch(AUTOTUNE).with_options(_options(config, deterministic=True))


@contextlib.contextmanager
def readable_errors(root):
    """Turns TensorFlow's data errors while iterating records under `root` into one-line InputErrors."""
    short = (f"{root}: the train shards yielded fewer records than manifest.json counts (a shard emptied, "
             "cut or replaced?); check with --verify_records, or write the record set again")
    try:
        yield
    except tf.errors.FailedPreconditionError as err:
        if "was expected to contain" not in err.message:  # an epoch shorter than its steps
            raise
        raise InputError(short) from None
    except tf.errors.InvalidArgumentError as err:
        if _COUNT_MESSAGE in err.message:
            raise InputError(short) from None
        if _SIZE_MESSAGE not in err.message:
            raise
        files = re.findall(r"\b[\w./-]+\.(?:jpe?g|png|bmp|tiff?)\b", err.message, flags=re.I)
        raise InputError(f"{root}: records whose image size differs from manifest.json "
                         f"({', '.join(dict.fromkeys(files)) or 'see the shards'}); write the record set again") from None
    except tf.errors.DataLossError as err:
        raise InputError(f"{root}: a shard is corrupt ({err.message.splitlines()[0]}); "
                         "run with --verify_records or write the record set again") from None


def dataset_fn(record_set, config, start=(0, 0), steps_per_epoch=0):
    """The `input_context -> dataset` function for `strategy.distribute_datasets_from_function`."""
    return lambda input_context: train_dataset(record_set, config, input_context, start=start,
                                               steps_per_epoch=steps_per_epoch)


def statistics_sample(record_set, config, batches, input_context=None):
    """The fixed sample of training batches that precise BatchNorm statistics are computed on.

    `batches` global batches (each replica gets its share of each), the same every time (a pure
    function of the seed, so resume stays exact), read from the files (no second cache of the
    split) through a shuffle buffer of a few times the sample, so the sample spans many shards.
    """
    sample = dataclasses.replace(config, cache="none", data_service="", seed=config.seed + 1,
                                 shuffle_buffer=min(config.shuffle_buffer, 4 * batches * config.global_batch_size))
    return train_dataset(record_set, sample, input_context, epochs=1, steps_per_epoch=batches)
