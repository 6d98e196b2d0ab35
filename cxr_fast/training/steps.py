"""The model, its optimizer and the compiled step functions of a run, built in a strategy's scope.

Used by the trainer, the train-step benchmark and the tests, so that all three run the same
step.  Per replica: augmentation on the replica's device (not XLA-compatible, so outside the
compiled function) -> forward/backward under `jit_compile` when the device gains from XLA,
loss weighted per class and averaged over the GLOBAL batch (so summing replicas' gradients
gives the one-device update) and scaled for float16 -> optimizer update (cross-replica sum).
`train_loop` runs `steps` such steps in one tf.function call, as Orbit does, so Python's
per-step overhead does not cap a fast accelerator, and it times the wait for input.

BatchNorm's moving statistics are updated per replica (as `model.fit` does), so replicas drift
apart; `sync_moving_statistics` averages them (Flax's imagenet example does the same before
evaluating), so every worker evaluates, checkpoints and decides on the same weights.
`gather` collects a host value from every replica, for checks that all workers agree.
"""
import keras
import numpy as np
import tensorflow as tf

from cxr_fast.training import augment
from cxr_fast.training import model as model_lib


class Steps:
    def __init__(self, config, strategy, class_weights, policy="float32", jit=False):
        self.strategy = strategy
        self.global_batch = config.data.global_batch_size
        with strategy.scope():
            self.model, self.backbone = model_lib.build_model(config.model)
            optimizer = keras.optimizers.Adam(config.learning_rate)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)  # before the first step, inside the scope
            self.model.compile(optimizer=optimizer, loss="binary_crossentropy")  # attaches it for callbacks
            self.optimizer = optimizer
            self.augmentation = augment.Augmentation(config.augment, seed=config.seed)
            self.position = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                             for name in ("epoch", "step_in_epoch", "global_step")}
        self.weight_table = tf.constant(class_weights, tf.float32)
        self.forward_backward = tf.function(self._forward_backward, jit_compile=jit)
        self.train_loop = tf.function(self._train_loop)
        self.predict = tf.function(lambda images: self.model(images, training=False), jit_compile=jit)
        self._statistics = [variable for layer in self.backbone.layers
                            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
                            for variable in (layer.moving_mean, layer.moving_variance)]
        self._sync = tf.function(self._sync_statistics)
        self._gather = tf.function(self._gather_values)

    def _sync_statistics(self):
        def replica_fn():
            # One batched all-reduce; tf.identity gives MultiWorkerMirroredStrategy a tensor with a device.
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self._statistics])
            for variable, mean in zip(self._statistics, means):
                variable.assign(mean)

        self.strategy.run(replica_fn)

    def sync_moving_statistics(self):
        """Every replica's BatchNorm moving mean and variance set to their mean over all replicas."""
        if self.strategy.num_replicas_in_sync > 1 and self._statistics:
            self._sync()

    def _gather_values(self, values):
        per_replica = self.strategy.run(lambda: tf.identity(values)[None])
        return self.strategy.gather(per_replica, axis=0)

    def gather(self, values):
        """A float vector from this worker -> [replicas, len] array of every replica's copy."""
        values = np.asarray(values, np.float64)
        if self.strategy.num_replicas_in_sync == 1:
            return values[None]
        return self._gather(tf.constant(values)).numpy()

    def _forward_backward(self, images, labels):
        with tf.GradientTape() as tape:
            probs = tf.reshape(self.model(images, training=True), [-1])
            per_example = keras.losses.binary_crossentropy(labels[:, None], probs[:, None])
            weighted = per_example * tf.gather(self.weight_table, tf.cast(labels, tf.int32))
            loss = tf.nn.compute_average_loss(weighted, global_batch_size=self.global_batch)
            scaled = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled, self.model.trainable_variables), weighted, probs

    def replica_step(self, images, labels):
        """One step on one replica; returns [weighted loss sum, correct, examples]."""
        images = self.augmentation(images, training=True)
        grads, weighted, probs = self.forward_backward(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(probs >= 0.5, tf.float32), labels), tf.float64))
        return tf.stack([tf.reduce_sum(tf.cast(weighted, tf.float64)), correct, tf.cast(tf.size(labels), tf.float64)])

    def _train_loop(self, iterator, steps):
        """`steps` steps in one call; returns [loss sum, correct, examples, seconds waiting for input]."""
        totals = tf.zeros([4], tf.float64)
        for _ in tf.range(steps):
            start = tf.timestamp()
            images, labels = next(iterator)
            waited = tf.timestamp() - start
            per_replica = self.strategy.run(self.replica_step, (images, labels))
            sums = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            totals += tf.concat([sums, [waited]], axis=0)
        return totals
