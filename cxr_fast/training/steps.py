"""The model, its optimizer and the compiled step functions of a run, built in a strategy's scope.

Used by the trainer, the train-step benchmarks and the tests, so that all of them run the same
step.  Per replica: seed this replica's random streams -> augmentation in float32 on the
replica's device (not XLA-compatible, so outside the compiled function) -> cast to the compute
dtype -> forward/backward under `jit_compile` when the device gains from XLA, loss weighted per
class and averaged over the GLOBAL batch (so summing replicas' gradients gives the one-device
update) and scaled for float16 -> optimizer update (cross-replica sum).

Randomness: every draw of a step is a function of (seed, step, replica).  The replica id is
global under MultiWorkerMirroredStrategy, so workers differ too.  Augmentation takes its seed
as an argument; Keras' Dropout draws from a SeedGenerator whose state is a mirrored variable
(the same on every replica: the same masks everywhere), so each replica writes its own state
into its local copy before the forward pass.  Runs reproduce from --seed and a resumed run draws
what the uninterrupted one would have.

float16 loss scaling: Keras' LossScaleOptimizer decides "finite" from the calling replica's own
gradients, before the cross-replica sum, so an overflow on one replica would be summed into the
others' update (or the replicas would take different branches and the all-reduce would hang).
`AgreedLossScaleOptimizer` all-reduces that decision: every replica skips the step and lowers
the scale together.

`train_loop` runs `steps` steps in one tf.function call, as Orbit does, so Python's per-step
overhead does not cap a fast accelerator; each replica adds its loss, correct count and
examples to a SUM-on-read variable, read (one reduction) once per call, not once per step.
`predict` spreads an evaluation batch over all replicas and gathers the probabilities in order.
BatchNorm's moving statistics are updated per replica (as `model.fit` does), so replicas drift
apart; before evaluation `precise_batch_norm` replaces them with population statistics pooled
over all replicas (or, when turned off, `sync_moving_statistics` averages them), so every worker
evaluates, checkpoints and decides on the same weights.  `gather` collects a host value from
every replica.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from cxr_fast.training import augment
from cxr_fast.training import model as model_lib

NOT_STARTED = 2**62  # ramp_start before a gated ramp starts: strength stays 0


@keras.saving.register_keras_serializable(package="cxr_fast")
class AgreedLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """LossScaleOptimizer whose overflow check is the same on every replica (any overflow skips)."""

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
        return tf.equal(overflowed, 0.0)


@keras.saving.register_keras_serializable(package="cxr_fast")
class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam whose update of each variable is TensorFlow's fused kernel (ResourceApplyAdam:
    the same formula, epsilon outside the square root) instead of ~15 small ops.

    The optimizer is applied outside XLA, per variable and per replica, so its op count is host
    work every step: EfficientNetB2 + head has 305 trainable variables.  Measured here (305
    one-value variables, 200 updates in one tf.function): 7.75 ms per update with Keras' ops,
    1.64 ms fused; the weights agree to float rounding (tests/training/test_steps.py).
    """

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle, v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, dtype),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype))


def _all_layers(model):
    """Every layer of `model`, nested models included, depth first, in order."""
    for layer in getattr(model, "layers", ()):
        yield from _all_layers(layer)
        yield layer


def seed_generators(model):
    """Every Keras SeedGenerator of the model's layers (Dropout's), nested models included, in order."""
    return [layer.seed_generator for layer in _all_layers(model)
            if isinstance(getattr(layer, "seed_generator", None), keras.random.SeedGenerator)]


def batch_norm_layers(model):
    """The BatchNormalization layers that train (frozen ones keep their statistics), in order."""
    return [layer for layer in _all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


class Steps:
    def __init__(self, config, strategy, class_weights, policy="float32", jit=False, build_model=None,
                 ramp_steps=0.0, ramp_start=0):
        self.strategy = strategy
        self.time_input = not config.deterministic  # tf.timestamp is refused under op determinism
        self.ramp_steps = float(ramp_steps)  # augmentation strength (step - ramp start) / ramp_steps, in [0, 1]
        self.global_batch = config.data.global_batch_size
        self.seed = config.seed
        with strategy.scope():
            self.model, self.backbone = (build_model or model_lib.build_model)(config.model)
            optimizer = FusedAdam(config.learning_rate)
            if policy == "mixed_float16":
                optimizer = AgreedLossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)  # before the first step, inside the scope
            self.model.compile(optimizer=optimizer, loss="binary_crossentropy")  # attaches it for callbacks
            self.optimizer = optimizer
            self.augmentation = augment.Augmentation(config.augment, seed=config.seed)
            # The ramp's first step; NOT_STARTED until `start_ramp` (a variable: no retrace when it moves)
            self.ramp_start = tf.Variable(NOT_STARTED if ramp_start is None else ramp_start, dtype=tf.int64,
                                          trainable=False, name="augment_ramp_start")
            self.position = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                             for name in ("epoch", "step_in_epoch", "global_step")}
            # loss sum, correct, labels, images: each replica adds its own, reading sums them (one reduction)
            self._sums = tf.Variable(tf.zeros([4], tf.float64), trainable=False,
                                     synchronization=tf.VariableSynchronization.ON_READ,
                                     aggregation=tf.VariableAggregation.SUM)
            self._bn_layers = batch_norm_layers(self.model)
            # per replica: [sum of batch means, sum of batch (variance + mean^2)] of every BatchNorm channel
            channels = sum(int(layer.moving_mean.shape[0]) for layer in self._bn_layers)
            self._moments = tf.Variable(tf.zeros([2 * channels], tf.float64), trainable=False,
                                        synchronization=tf.VariableSynchronization.ON_READ,
                                        aggregation=tf.VariableAggregation.SUM)
        self.compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
        # binary: [weight of class 0, of class 1]; multi-label: [findings, 2] (negative, positive) per finding
        self.weight_table = tf.constant(class_weights, tf.float32)
        self.multilabel = bool(config.model.findings)
        self._generators = seed_generators(self.model)
        # XLA compiles a function of its own; without XLA the forward/backward is traced inline into
        # the replica function (a nested tf.function cannot hold synchronized BatchNorm's all-reduce).
        self.forward_backward = tf.function(self._forward_backward, jit_compile=True) if jit else self._forward_backward
        self.train_loop = tf.function(self._train_loop)
        self._predict_replica = tf.function(self._predict_on_replica, jit_compile=jit)
        self._predict_all = tf.function(self._predict_distributed)
        self._statistics = [variable for layer in self._bn_layers for variable in (layer.moving_mean,
                                                                                   layer.moving_variance)]
        self._precise = tf.function(self._precise_statistics)
        self._sync = tf.function(self._sync_statistics)
        self._gather = tf.function(self._gather_values)

    # ---- randomness
    def replica_seed(self, step):
        """This replica's seed at `step`: [seed, step * replicas + replica], replica global over workers."""
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64) * replicas + replica])

    def replica_inputs(self, images, step):
        """Seeds this replica's dropout for `step` and returns its augmented batch in the compute dtype."""
        seed = self.replica_seed(step)
        for index, generator in enumerate(self._generators):
            fold = tf.random.experimental.stateless_fold_in(seed, index + 1)
            generator.state.assign(tf.cast(fold, generator.state.dtype))  # this replica's own copy
        images = self.augmentation(images, training=True, seed=tf.random.experimental.stateless_fold_in(seed, 0),
                                   strength=self.augment_strength(step))
        return tf.cast(images, self.compute_dtype)

    def augment_strength(self, step):
        """The augmentation's strength at `step`: 0 until the ramp starts, then linear to 1 over
        `ramp_steps` (a function of the step and the start, so a resumed run that restores the
        start draws what the uninterrupted one would have)."""
        if self.ramp_steps <= 0:
            return tf.constant(1.0)
        progress = tf.cast(tf.cast(step, tf.int64) - self.ramp_start, tf.float32) / self.ramp_steps
        return tf.clip_by_value(progress, 0.0, 1.0)

    def start_ramp(self, step):
        """The ramp begins at `step` (the same on every worker: they decide on agreed logs)."""
        self.ramp_start.assign(step)

    @property
    def ramp_started(self):
        return int(self.ramp_start.numpy()) != NOT_STARTED

    # ---- BatchNorm statistics and agreement across replicas
    def _moments_of_batch(self, images):
        self.model(tf.cast(images, self.compute_dtype), training=True)  # momentum 0: moving = this batch's
        means = [tf.cast(layer.moving_mean.value, tf.float64) for layer in self._bn_layers]
        squares = [tf.cast(layer.moving_variance.value, tf.float64) + tf.square(mean)
                   for layer, mean in zip(self._bn_layers, means)]
        self._moments.assign_add(tf.concat(means + squares, axis=0))

    def _precise_statistics(self, iterator, batches):
        self.strategy.run(lambda: self._moments.assign(tf.zeros_like(self._moments)))
        for _ in tf.range(batches):
            images, _ = next(iterator)
            self.strategy.run(self._moments_of_batch, (images,))

        def total():  # every replica of every worker ends with the same sums
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                  tf.identity(self._moments))

        return self.strategy.experimental_local_results(self.strategy.run(total))[0]

    def precise_batch_norm(self, iterator, batches):
        """Sets every training BatchNorm layer's moving mean and variance to population statistics.

        Keras' moving averages (momentum 0.99) lag weights that change fast, as from scratch,
        so the evaluation-mode model can be far off the trained one (seen: constant outputs).
        As Detectron2's PreciseBN (Wu & Johnson 2021), this runs `batches` training-mode
        forward passes per replica under the current weights and pools the per-batch moments
        over batches, replicas and workers: mean = E[batch mean], variance = E[batch variance
        + batch mean^2] - mean^2.  Each layer sees its input as training produced it.  Every
        worker ends with the same statistics, so all evaluate and checkpoint the same model.
        """
        if not self._bn_layers:
            return
        momenta = [layer.momentum for layer in self._bn_layers]
        for layer in self._bn_layers:  # read when the function is traced: this one always traces with 0
            layer.momentum = 0.0
        try:
            sums = self._precise(iterator, tf.constant(batches)).numpy()
        finally:
            for layer, momentum in zip(self._bn_layers, momenta):
                layer.momentum = momentum
        count = batches * self.strategy.num_replicas_in_sync
        half = sums.size // 2
        means, squares = sums[:half] / count, sums[half:] / count
        variances = np.maximum(squares - means**2, 0.0)
        offset = 0
        for layer in self._bn_layers:
            size = int(layer.moving_mean.shape[0])
            layer.moving_mean.assign(means[offset:offset + size].astype(np.float32))
            layer.moving_variance.assign(variances[offset:offset + size].astype(np.float32))
            offset += size

    def _sync_statistics(self):
        def replica_fn():
            # One batched all-reduce; tf.identity gives MultiWorkerMirroredStrategy a tensor with a device.
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in self._statistics])
            for variable, mean in zip(self._statistics, means):
                variable.assign(mean)

        self.strategy.run(replica_fn)

    def sync_moving_statistics(self):
        """Every replica's BatchNorm moving mean and variance set to their mean over all replicas
        (what keeps workers in agreement when precise statistics are turned off)."""
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

    # ---- training
    def _forward_backward(self, images, labels):
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            weighted = self._weighted_losses(labels, probs)
            loss = tf.nn.compute_average_loss(tf.reduce_sum(tf.reshape(weighted, [tf.shape(probs)[0], -1]), 1)
                                              / tf.cast(tf.shape(probs)[1], tf.float32),
                                              global_batch_size=self.global_batch)
            scaled = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled, self.model.trainable_variables), weighted, probs

    def _weighted_losses(self, labels, probs):
        """Class-weighted cross-entropy per label: [B] (binary) or [B, findings] with ignored labels 0."""
        if not self.multilabel:
            per_example = keras.losses.binary_crossentropy(labels[:, None], probs)
            return per_example * tf.gather(self.weight_table, tf.cast(labels, tf.int32))
        known = labels >= 0
        targets = tf.where(known, labels, 0.0)
        per_label = keras.losses.binary_crossentropy(targets[..., None], probs[..., None])
        weights = tf.where(targets > 0.5, self.weight_table[:, 1], self.weight_table[:, 0])
        return per_label * weights * tf.cast(known, tf.float32)

    def replica_step(self, images, labels, step):
        """One step on one replica; adds [weighted loss sum, correct, labels scored, images] to the loop's
        sums (a multi-label set scores every label that is not ignored)."""
        grads, weighted, probs = self.forward_backward(self.replica_inputs(images, step), labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        probs = tf.reshape(probs, tf.shape(labels))
        known = tf.cast(labels >= 0, tf.float64)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(probs >= 0.5, tf.float32), labels), tf.float64) * known)
        self._sums.assign_add(tf.stack([tf.reduce_sum(tf.cast(weighted, tf.float64)), correct,
                                        tf.reduce_sum(known), tf.cast(tf.shape(images)[0], tf.float64)]))

    def _train_loop(self, iterator, steps, first_step):
        """Steps first_step .. first_step + steps - 1 in one call.

        Returns [loss sum, correct, labels scored, images, seconds waiting for input (0 under op
        determinism, which refuses timestamps)], summed over replicas.
        """
        self.strategy.run(lambda: self._sums.assign(tf.zeros([4], tf.float64)))
        waited = tf.constant(0.0, tf.float64)
        for step in tf.range(steps, dtype=tf.int64):
            if self.time_input:
                start = tf.timestamp()
                images, labels = next(iterator)
                waited += tf.timestamp() - start
            else:
                images, labels = next(iterator)
            self.strategy.run(self.replica_step, (images, labels, first_step + step))
        return tf.concat([tf.identity(self._sums), [waited]], axis=0)

    # ---- evaluation
    def _predict_on_replica(self, images):
        probs = self.model(tf.cast(images, self.compute_dtype), training=False)
        return probs if self.multilabel else tf.reshape(probs, [-1])

    def _predict_distributed(self, per_replica_images):
        probs = self.strategy.run(self._predict_on_replica, (per_replica_images,))
        return self.strategy.gather(probs, axis=0)

    def predict(self, images):
        """Probabilities [B] ([B, findings]) of a batch in evaluation mode, across all replicas, in order.

        Every worker passes the same batch; each replica scores its slice (the batch padded to a
        multiple of the replicas) and the slices are gathered back in replica order.
        """
        replicas = self.strategy.num_replicas_in_sync
        if replicas == 1:
            return self._predict_replica(images)
        count = int(images.shape[0])
        per_replica = math.ceil(count / replicas)
        padded = tf.concat([images, tf.zeros([per_replica * replicas - count, *images.shape[1:]], images.dtype)], 0)
        values = self.strategy.experimental_distribute_values_from_function(
            lambda context: padded[context.replica_id_in_sync_group * per_replica:
                                   (context.replica_id_in_sync_group + 1) * per_replica])
        return self._predict_all(values)[:count]
