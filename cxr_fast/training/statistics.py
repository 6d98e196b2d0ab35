"""BatchNorm statistics that every replica and worker agree on, recomputed before evaluation.

BatchNorm's moving statistics are updated per replica (as `model.fit` does), so replicas drift
apart, and Keras' moving averages (momentum 0.99) lag weights that change fast, as from scratch,
so the evaluation-mode model can be far off the trained one (seen: constant outputs).
`BatchNormStatistics.precise` replaces them with population statistics pooled over all
replicas (Detectron2's PreciseBN, Wu & Johnson 2021); `sync` (when precise statistics are off)
averages them over the replicas.  Either way every worker evaluates, checkpoints and decides on
the same weights.
"""
import keras
import numpy as np
import tensorflow as tf

from cxr_fast.training import model as model_lib


def batch_norm_layers(model):
    """The BatchNormalization layers that train (frozen ones keep their statistics), in order."""
    return [layer for layer in model_lib.all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


class BatchNormStatistics:
    """The training BatchNorm layers of `model` under `strategy`; build it inside the strategy's scope."""

    def __init__(self, strategy, model, compute_dtype):
        self.strategy, self.model, self.compute_dtype = strategy, model, compute_dtype
        self.layers = batch_norm_layers(model)
        # per replica: [sum of batch means, sum of batch (variance + mean^2)] of every BatchNorm channel
        channels = sum(int(layer.moving_mean.shape[0]) for layer in self.layers)
        self._moments = tf.Variable(tf.zeros([2 * channels], tf.float64), trainable=False,
                                    synchronization=tf.VariableSynchronization.ON_READ,
                                    aggregation=tf.VariableAggregation.SUM)
        self._statistics = [variable for layer in self.layers for variable in (layer.moving_mean,
                                                                               layer.moving_variance)]
        self._precise = tf.function(self._precise_sums)
        self._sync = tf.function(self._sync_replicas)

    def _moments_of_batch(self, images):
        self.model(tf.cast(images, self.compute_dtype), training=True)  # momentum 0: moving = this batch's
        means = [tf.cast(layer.moving_mean.value, tf.float64) for layer in self.layers]
        squares = [tf.cast(layer.moving_variance.value, tf.float64) + tf.square(mean)
                   for layer, mean in zip(self.layers, means)]
        self._moments.assign_add(tf.concat(means + squares, axis=0))

    def _precise_sums(self, iterator, batches):
        self.strategy.run(lambda: self._moments.assign(tf.zeros_like(self._moments)))
        for _ in tf.range(batches):
            images, _ = next(iterator)
            self.strategy.run(self._moments_of_batch, (images,))

        def total():  # every replica of every worker ends with the same sums
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                  tf.identity(self._moments))

        return self.strategy.experimental_local_results(self.strategy.run(total))[0]

    def precise(self, iterator, batches):
        """Sets every training BatchNorm layer's moving mean and variance to population statistics:
        `batches` training-mode forward passes per replica under the current weights, the
        per-batch moments pooled over batches, replicas and workers: mean = E[batch mean],
        variance = E[batch variance + batch mean^2] - mean^2.  Each layer sees its input as training produced it.  Every
        worker ends with the same statistics, so all evaluate and checkpoint the same model.
        """
        if not self.layers:
            return
        momenta = [layer.momentum for layer in self.layers]
        for layer in self.layers:  # read when the function is traced: this one always traces with 0
            layer.momentum = 0.0
        try:
            sums = self._precise(iterator, tf.constant(batches)).numpy()
        finally:
            for layer, momentum in zip(self.layers, momenta):
                layer.momentum = momentum
        count = batches * self.strategy.num_replicas_in_sync
        half = sums.size // 2
        means, squares = sums[:half] / count, sums[half:] / count
        variances = np.maximum(squares - means**2, 0.0)
        offset = 0
        for layer in self.layers:
            size = int(layer.moving_mean.shape[0])
            layer.moving_mean.assign(means[offset:offset + size].astype(np.float32))
            layer.moving_variance.assign(variances[offset:offset + size].astype(np.float32))
            offset += size

    def _sync_replicas(self):
        def replica_fn():
            # One batched all-reduce; tf.identity gives MultiWorkerMirroredStrategy a tensor with a device.
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self._statistics])
            for variable, mean in zip(self._statistics, means):
                variable.assign(mean)

        self.strategy.run(replica_fn)

    def sync(self):
        """Every replica's BatchNorm moving mean and variance set to their mean over all replicas
        (what keeps workers in agreement when precise statistics are turned off)."""
        if self.strategy.num_replicas_in_sync > 1 and self._statistics:
            self._sync()
