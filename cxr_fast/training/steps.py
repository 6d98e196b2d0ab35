"""The compiled step functions of a run (train, predict), with the model and optimizer they step,
built in a strategy's scope.

Used by the trainer, the train-step benchmarks and the tests, so that all of them run the same
step.  Per replica: seed this replica's random streams -> augmentation in float32 on the
replica's device (not XLA-compatible, so outside the compiled function) -> cast to the compute
dtype -> forward/backward under `jit_compile` when the device gains from XLA, the task's
class-weighted loss (`cxr_fast.tasks.task`) averaged over the GLOBAL batch (so summing replicas' gradients gives the one-device
update) and scaled for float16 -> optimizer update (cross-replica sum).

Randomness: every draw of a step is a function of (seed, step, replica).  The replica id is
global under MultiWorkerMirroredStrategy, so workers differ too.  Augmentation takes its seed
as an argument; Keras' Dropout draws from a SeedGenerator whose state is a mirrored variable
(the same on every replica: the same masks everywhere), so each replica writes its own state
into its local copy before the forward pass.  Runs reproduce from --seed and a resumed run draws
what the uninterrupted one would have.

The optimizers (fused Adam, agreed float16 loss scaling) are in `optimizers`, the BatchNorm
statistics every replica agrees on in `statistics`, the augmentation ramp in `augment.Ramp`,
sharing a host value across workers in `distributed.strategy.Gather`; `Steps` holds one of each.

`train_loop` runs `steps` steps in one tf.function call, as Orbit does, so Python's per-step
overhead does not cap a fast accelerator; each replica adds its loss, correct count and
examples to a SUM-on-read variable, read (one reduction) once per call, not once per step.
`predict` spreads an evaluation batch over all replicas and gathers the probabilities in order.
"""
import math

import keras
import tensorflow as tf

from cxr_fast.distributed.strategy import Gather
from cxr_fast.training import augment, optimizers
from cxr_fast.training import model as model_lib
from cxr_fast.tasks import task as task_lib
from cxr_fast.training.statistics import BatchNormStatistics

def seed_generators(model):
    """Every Keras SeedGenerator of the model's layers (Dropout's), nested models included, in order."""
    return [layer.seed_generator for layer in model_lib.all_layers(model)
            if isinstance(getattr(layer, "seed_generator", None), keras.random.SeedGenerator)]


class Steps:
    def __init__(self, config, strategy, class_weights, policy="float32", jit=False, build_model=None,
                 ramp_steps=0.0, ramp_start=0):
        self.strategy = strategy
        self.time_input = not config.deterministic  # tf.timestamp is refused under op determinism
        self.global_batch = config.data.global_batch_size
        self.seed = config.seed
        self.compute_dtype = keras.mixed_precision.Policy(policy).compute_dtype
        with strategy.scope():
            self.model, self.backbone = (build_model or model_lib.build_model)(config.model)
            self.optimizer = optimizers.build_optimizer(config.learning_rate, policy, self.model.trainable_variables)
            self.model.compile(optimizer=self.optimizer, loss="binary_crossentropy")  # attaches it for callbacks
            self.augmentation = augment.Augmentation(config.augment, seed=config.seed)
            # augmentation strength (step - ramp start) / ramp_steps in [0, 1]; a gated ramp starts later
            self.ramp = augment.Ramp(ramp_steps, ramp_start)
            self.position = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                             for name in ("epoch", "step_in_epoch", "global_step")}
            # loss sum, correct, labels, images: each replica adds its own, reading sums them (one reduction)
            self._sums = tf.Variable(tf.zeros([4], tf.float64), trainable=False,
                                     synchronization=tf.VariableSynchronization.ON_READ,
                                     aggregation=tf.VariableAggregation.SUM)
            self.statistics = BatchNormStatistics(strategy, self.model, self.compute_dtype)
        self.gather = Gather(strategy)
        # the task's class weights: [class 0, class 1], or [findings, 2] (negative, positive) per finding
        self.task = task_lib.create(config.model.findings, config.model.classes)
        self.weight_table = tf.constant(class_weights, tf.float32)
        self._generators = seed_generators(self.model)
        # XLA compiles a function of its own; without XLA the forward/backward is traced inline into
        # the replica function (a nested tf.function cannot hold synchronized BatchNorm's all-reduce).
        self.forward_backward = tf.function(self._forward_backward, jit_compile=True) if jit else self._forward_backward
        self.train_loop = tf.function(self._train_loop)
        self._predict_replica = tf.function(self._predict_on_replica, jit_compile=jit)
        self._predict_all = tf.function(self._predict_distributed)

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
                                   strength=self.ramp.strength(step))
        return tf.cast(images, self.compute_dtype)

    # ---- training
    def _forward_backward(self, images, labels):
        with tf.GradientTape() as tape:
            probs = self.model(images, training=True)
            weighted = self.task.weighted_losses(labels, probs, self.weight_table)
            loss = tf.nn.compute_average_loss(tf.reduce_sum(tf.reshape(weighted, [tf.shape(probs)[0], -1]), 1)
                                              / tf.cast(tf.shape(probs)[1], tf.float32),
                                              global_batch_size=self.global_batch)
            scaled = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled, self.model.trainable_variables), weighted, probs

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
        return self.task.predictions(probs)

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
