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
import functools
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


_KEYS = [schema.ENCODED, schema.LABEL, schema.HEIGHT, schema.WIDTH, schema.CHANNELS, schema.FILENAME]


def _decoder(record_set, config, with_metadata=False):
    """A function of a batch of serialized records -> (uint8 images, float32 labels[, metadata]).

    Labels are the record set's task's: [B] for a binary set, [B, findings] (1, 0 or -1: ignored)
    for a multi-label set.
    """
    task = task_lib.for_record_set(record_set)
    keys = _KEYS + [schema.PATIENT] * with_metadata
    images_of = functools.partial(_images, record_set.stored_size, record_set.encoding, config.image_size)

    def decode(serialized):
        features = schema.parse_batch(serialized, keys, len(task.findings))
        labels = task.labels(features[schema.LABEL], features.get(schema.FINDINGS))
        return _element(images_of(features), labels, features, with_metadata)

    return decode


def _element(images, labels, features, with_metadata):
    if not with_metadata:
        return images, labels
    return images, labels, {"filename": features[schema.FILENAME], "patient": features[schema.PATIENT]}


def _images(stored_size, encoding, image_size, features):
    """A parsed batch's images, uint8 [B, image_size, image_size, 1], after checking each has the
    manifest's stored size."""
    height, width = stored_size
    match = ((features[schema.HEIGHT] == height) & (features[schema.WIDTH] == width)
             & (features[schema.CHANNELS] == 1))
    if encoding == "raw":
        match &= tf.strings.length(features[schema.ENCODED]) == height * width
    check = tf.debugging.Assert(tf.reduce_all(match),
                                [_SIZE_MESSAGE, tf.boolean_mask(features[schema.FILENAME], ~match)], summarize=3)
    with tf.control_dependencies([check]):
        images = schema.decode_images(features[schema.ENCODED], encoding, height, width)
    if (height, width) != (image_size, image_size):
        images = tf.image.resize(images, [image_size, image_size], antialias=True)
        images = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
    return images


def _mixed_decoder(mix, config, with_metadata=False):
    """A function of (set index per record, a batch of serialized records of a mix's sets) ->
    (uint8 images, float32 labels [B, the mix's findings][, metadata]): one parse and decode for
    the batch whichever sets its records come from (the sets share stored size and encoding)."""
    sources = tf.constant(_source_table(mix), tf.int32)  # [sets, findings]: column of [LABEL, FINDINGS...]
    width = max(len(part.findings) for part in mix.sets)
    keys = _KEYS + [schema.PATIENT] * with_metadata
    images_of = functools.partial(_images, mix.stored_size, mix.encoding, config.image_size)

    def decode(set_ids, serialized):
        features = schema.parse_batch(serialized, keys, varying_findings=True)
        findings = tf.sparse.to_dense(features[schema.FINDINGS], default_value=-1.0)
        findings = tf.pad(findings, [[0, 0], [0, width - tf.shape(findings)[1]]], constant_values=-1.0)
        table = tf.concat([tf.cast(features[schema.LABEL], tf.float32)[:, None], findings], axis=1)
        columns = tf.gather(sources, set_ids)
        labels = tf.where(columns >= 0, tf.gather(table, tf.maximum(columns, 0), batch_dims=1), -1.0)
        return _element(images_of(features), labels, features, with_metadata)

    return decode


def _from_set(decode, index, serialized):
    """A mix's decoder on a batch of records all of set `index`."""
    return decode(tf.fill(tf.shape(serialized), index), serialized)


def _source_table(mix):
    """Per set, per finding of the mix: the record's label column holding it (0: LABEL, 1 + j:
    FINDINGS[j]), or -1."""
    table = []
    for part, columns in zip(mix.sets, mix.columns):
        own = task_lib.for_record_set(part).source_columns()
        table.append([own[c] if c >= 0 else -1 for c in columns])
    return table


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
    def epoch(seed):
        return _passes(files, records, config, seed, steps * batch).batch(batch, drop_remainder=True).take(steps)

    return epoch


def _passes(files, records, config, seed, count):
    """Serialized records of `files` for `count` draws: passes over the files, each in its own order
    (files shuffled, then records through the shuffle buffer), as many as `records` need, plus one."""
    def one_pass(pass_seed):
        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=pass_seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 16), num_parallel_calls=AUTOTUNE)
        return ds.shuffle(max(config.shuffle_buffer, 1), seed=pass_seed)

    passes = tf.data.Dataset.range(-(-count // records) + 1).map(lambda number: _hash(seed, number))
    return passes.flat_map(one_pass)


def _decoded_table(files, records, decode, config):
    """The records of `files`, decoded once (large vectorized batches) into one (images, labels)
    element, cached.  Building it (unbatch, then one batch of the whole split) briefly holds the
    split twice."""
    table = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8), num_parallel_calls=AUTOTUNE)
    return table.batch(config.decode_batch).map(decode, num_parallel_calls=AUTOTUNE).unbatch().batch(records)


def _permutations(seed, count, records, stream=0):
    """`count` indices: uniform permutations of `records` one after the other, from (seed, stream)."""
    passes = -(-count // records)
    keys = tf.random.stateless_uniform([passes, records], seed=tf.stack([seed, tf.constant(stream, tf.int64)]))
    return tf.reshape(tf.argsort(keys, axis=1), [-1])[:count]


def _cached_epochs(table, records, order, batch, steps):
    """epoch seed -> that epoch's `steps` batches, gathered from the decoded split held in memory.

    `table` is the cached (images, labels) of `records` rows; `order(seed, count)` gives the rows
    of an epoch (for one set, fresh uniform permutations of it).  Each batch is one gather.  A
    shuffle buffer of single images instead costs tf.data's per-element overhead 64 times per
    batch (measured here: 2.5x fewer images/s on a Kermany-sized set).
    """
    table = table.cache()
    count = steps * batch

    def gathered(rows, images, labels):
        check = tf.debugging.Assert(tf.equal(tf.shape(images)[0], records), [_COUNT_MESSAGE], summarize=1)
        with tf.control_dependencies([check]):
            return tf.data.Dataset.from_tensor_slices(rows).map(
                lambda batch_rows: (tf.gather(images, batch_rows), tf.gather(labels, batch_rows)),
                num_parallel_calls=AUTOTUNE)

    def epoch(seed):
        rows = tf.reshape(order(seed, count), [steps, batch])
        # files that hold no record give no table, so the stream ends (see `readable_errors`)
        return table.flat_map(lambda images, labels: gathered(rows, images, labels))

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
    if config.data_service:
        return _service_dataset(record_set, config, input_context, epochs)
    if hasattr(record_set, "sets"):
        return _mixed_train_dataset(record_set, config, input_context, epochs, start, steps_per_epoch)
    share = _share(record_set, config, input_context)
    files = list(_split_files(record_set, "train"))[share.index::share.pipelines]
    decode = _decoder(record_set, config)
    steps = _pipeline_steps(record_set, config, share, steps_per_epoch)
    records = _records_of(record_set, files, share)
    if cache_fits(record_set, config):
        table = _decoded_table(files, records, decode, config)
        epoch = _cached_epochs(table, records, lambda seed, count: _permutations(seed, count, records),
                               share.batch, steps)
        return _epochs(epoch, steps, share, config, start, epochs)
    epoch = _record_epochs(files, records, config, share.batch, steps)
    return _epochs(epoch, steps, share, config, start, epochs, decode)


def _mixed_train_dataset(mix, config, input_context, epochs, start, steps_per_epoch):
    """The training stream of a RecordMix (`cxr_fast.data.mixture`): per draw, a set chosen as the
    mix's weights say (proportional: every set's films exactly once per epoch, in a shuffled
    interleaving), and from it the next film of that set's own epoch order; labels in the mix's
    findings (-1 where the set does not label one).  Cached: the sets' decoded tables joined
    into one and each batch one gather, as for one set; else the sets' serialized records chosen
    from draw by draw, then each batch parsed and decoded in one call, as for one set."""
    share = _share(mix, config, input_context)
    steps = _pipeline_steps(mix, config, share, steps_per_epoch)
    files = [list(_split_files(part, "train"))[share.index::share.pipelines] for part in mix.sets]
    counts = [_records_of(part, own, share) for part, own in zip(mix.sets, files)]
    chooser, decode = _Chooser(tuple(counts), mix.weights, mix.proportional), _mixed_decoder(mix, config)
    if cache_fits(mix, config):
        epoch = _cached_epochs(_joined_table(files, counts, decode, config), sum(counts), chooser.rows, share.batch,
                               steps)
        return _epochs(epoch, steps, share, config, start, epochs)
    epoch = functools.partial(_mixed_record_epoch, files, counts, config, share.batch, steps, chooser)
    return _epochs(epoch, steps, share, config, start, epochs, decode)


def _joined_table(files, counts, decode, config):
    """The sets' decoded tables as one (images, labels) element, set after set."""
    tables = tuple(_decoded_table(own, records, functools.partial(_from_set, decode, index), config)
                   for index, (own, records) in enumerate(zip(files, counts)))
    return tf.data.Dataset.zip(tables).map(lambda *pairs: (tf.concat([p[0] for p in pairs], 0),
                                                           tf.concat([p[1] for p in pairs], 0)))


@dataclasses.dataclass(frozen=True)
class _Chooser:
    """Which set each draw of an epoch comes from, and which row of the joined table, from the seed."""

    counts: tuple  # this pipeline's training records per set
    weights: tuple
    proportional: bool

    def sets(self, seed, count):
        """[count] set indices: proportional, shuffled passes over each set's records; else drawn by weight."""
        streams = len(self.counts) + 1  # permutation streams 1..len(counts) are the sets' own orders
        if self.proportional:
            pool = tf.repeat(tf.range(len(self.counts)), self.counts)
            return tf.gather(pool, _permutations(seed, count, sum(self.counts), streams))
        logits = tf.math.log(tf.constant([self.weights], tf.float32))
        return tf.random.stateless_categorical(logits, count, tf.stack([seed, tf.constant(streams, tf.int64)]),
                                               dtype=tf.int32)[0]

    def rows(self, seed, count):
        """[count] rows of the joined table: set s's k-th draw is its own k-th film in epoch order."""
        chosen = self.sets(seed, count)
        rows, offset = tf.zeros([count], tf.int32), 0
        for index, records in enumerate(self.counts):
            mine = tf.equal(chosen, index)
            position = tf.maximum(tf.cumsum(tf.cast(mine, tf.int32)) - 1, 0)
            own = _permutations(seed, count, records, index + 1)
            rows = tf.where(mine, offset + tf.gather(own, position), rows)
            offset += records
        return rows


def _mixed_record_epoch(files, counts, config, batch, steps, chooser, seed):
    """One epoch of a mix read from the records: each set's serialized records in its own epoch
    order, chosen from draw by draw, batched with the set of each record (decoded per batch later,
    `_mixed_decoder`)."""
    count = steps * batch
    streams = [_passes(own, records, config, _hash(seed, 1 << 20 | index), count)
               for index, (own, records) in enumerate(zip(files, counts))]
    chosen = tf.data.Dataset.from_tensor_slices(tf.cast(chooser.sets(seed, count), tf.int64))
    records = tf.data.Dataset.choose_from_datasets(streams, chosen).batch(batch, drop_remainder=True)
    return tf.data.Dataset.zip((chosen.batch(batch, drop_remainder=True), records)).take(steps)


@dataclasses.dataclass(frozen=True)
class _Share:
    """One input pipeline's part of the training stream."""

    pipelines: int = 1  # input pipelines (hosts) reading disjoint shard files
    index: int = 0  # this one
    batch: int = 0  # per-replica batch
    local: int = 1  # replicas this pipeline feeds, one batch each per global step


def _share(record_set, config, input_context):
    """This input pipeline's files and batches; every shard set needs a file per pipeline."""
    if input_context is None:
        return _Share(batch=config.global_batch_size)
    pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    for part in getattr(record_set, "sets", (record_set,)):
        if len(_split_files(part, "train")) < pipelines:
            raise InputError(f"{part.root} has {len(_split_files(part, 'train'))} train shards for {pipelines} input "
                             f"pipelines; write it again with tools.make_tfrecords --min_shards={10 * pipelines} "
                             "(10 per host)")
    return _Share(pipelines, index, _per_replica_batch(config, input_context),
                  input_context.num_replicas_in_sync // pipelines)


def _per_replica_batch(config, input_context):
    if input_context is None:
        return config.global_batch_size
    if config.global_batch_size % input_context.num_replicas_in_sync:
        raise InputError(f"--batch_size={config.global_batch_size} must be a multiple of the "
                         f"{input_context.num_replicas_in_sync} replicas in sync")
    return input_context.get_per_replica_batch_size(config.global_batch_size)


def _pipeline_steps(record_set, config, share, steps_per_epoch):
    """Per-replica batches this pipeline yields per epoch: one for each of its replicas per global step."""
    return share.local * (steps_per_epoch or max(1, record_set.num_records("train") // config.global_batch_size))


def _records_of(record_set, files, share):
    records = sum(record_set.records[f] for f in files)
    if not records:
        raise InputError(f"{record_set.root}: the train shards of input pipeline {share.index} hold no records "
                         "(manifest.json); write the record set again")
    return records


def _epochs(epoch, steps, share, config, start, epochs, decode=None):
    """Epochs from `start` = (epoch, global step in it): each a function of its own seed, the
    consumed batches of a resumed epoch skipped, then decoded (`decode`: records not cached)."""
    first, skip = start
    last = tf.int64.max if epochs is None else first + epochs
    # An epoch that ends short (files holding fewer records than the manifest says) is an error, not
    # the start of the next one: endless empty epochs would spin forever.
    ds = tf.data.Dataset.range(first, last).flat_map(lambda number: epoch(
        epoch_seed(config.seed, number, share.index)).apply(tf.data.experimental.assert_cardinality(steps)))
    ds = ds.skip(skip * share.local)
    if decode is not None:
        ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
    ds = _with_channels(ds, config).with_options(_options(config, deterministic=True))
    return ds.prefetch(AUTOTUNE)


def _service_dataset(record_set, config, input_context, epochs):
    """The training stream through the tf.data service (see `train_dataset`)."""
    if hasattr(record_set, "sets"):
        raise InputError("--data_service reads one record set; train on several without it")
    files = list(_split_files(record_set, "train"))
    batch = _per_replica_batch(config, input_context)
    decode = _decoder(record_set, config)
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


def eval_dataset(record_set, split, config, with_metadata=False, batch_size=None):
    """Every record of `split` exactly once, in file order, the last partial batch kept.

    With `with_metadata` each element is (images, labels, {"filename", "patient"}), for
    predictions files and per-patient metrics.
    """
    if hasattr(record_set, "sets"):
        return _mixed_eval_dataset(record_set, split, config, with_metadata, batch_size)
    return _eval_dataset(record_set, split, config, _decoder(record_set, config, with_metadata), batch_size)


def _eval_dataset(record_set, split, config, decode, batch_size=None):
    files = _split_files(record_set, split)
    ds = tf.data.TFRecordDataset(list(files), buffer_size=1 << 22)
    ds = ds.batch(batch_size or config.global_batch_size).map(decode, num_parallel_calls=AUTOTUNE)
    return _with_channels(ds, config).prefetch(AUTOTUNE).with_options(_options(config, deterministic=True))


def _mixed_eval_dataset(mix, split, config, with_metadata, batch_size):
    """Each set's split in turn, labels in the mix's findings; patients named `{set}/{patient}`."""
    decode = _mixed_decoder(mix, config, with_metadata)
    parts = [_eval_dataset(part, split, config, functools.partial(_from_set, decode, index), batch_size).map(
        functools.partial(_namespaced, mix.set_name(index))) for index, part in enumerate(mix.sets)]
    return functools.reduce(lambda joined, part: joined.concatenate(part), parts)


def _namespaced(name, images, labels, *metadata):
    if not metadata:
        return images, labels
    patients = tf.strings.join([name + "/", metadata[0]["patient"]])
    return images, labels, {**metadata[0], "patient": patients}


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
