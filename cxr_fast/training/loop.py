"""The custom distributed training loop: one code path for one device, one host, many hosts.

Reads top to bottom: setup (strategy, precision, XLA, outputs) -> data (record set, class
weights) -> model, optimizer and step functions (`cxr_fast.training.steps`: built in the strategy
scope; augmentation on the replica's device outside XLA, forward/backward jit-compiled when
the device gains from it, `steps_per_loop` steps per tf.function call) -> resume from the
checkpoint if any -> epoch loop with the reference's callbacks and periodic checkpoints
(`cxr_fast.training.checkpointing`) -> best weights, model.keras, test score.

A multi-label record set (its manifest names `findings`) gets one sigmoid per finding and a
masked, per-finding class-weighted loss (`steps`); its val_auc is the macro AUC over findings.
From scratch, the augmentation holds at flips only until an epoch's val AUC shows the net has
found a sign, then its ranges ramp up over a few epochs (`TrainConfig.augment_ramp`).

Keras' `model.fit` is not used: it fails under MultiWorkerMirroredStrategy and turns XLA off
under any strategy.  Callbacks still run, through `keras.callbacks.CallbackList`.
"""
import dataclasses
import hashlib
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from cxr_fast import atomic
from cxr_fast.config import SMALL_REPLICA_BATCH
from cxr_fast.data import pipeline, recordset
from cxr_fast.distributed import service as data_service
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.errors import ClusterError, InputError, TrainingError
from cxr_fast.evaluation import metrics, multilabel
from cxr_fast.serving import inference, savedmodel
from cxr_fast.training import checkpointing
from cxr_fast.training import model as model_lib
from cxr_fast.training.steps import Steps

BEST_WEIGHTS = "best.weights.h5"
GPU_STEPS_PER_LOOP = 50  # steps per tf.function call on GPUs (--steps_per_loop=0): Python's per-call cost amortized


def class_weights(record_set, mode):
    """sklearn's 'balanced' weights on the training labels (counted in the manifest), or ones.

    Binary: [w(class 0), w(class 1)].  Multi-label: [[w(negative), w(positive)]] per finding, the
    same formula per finding over its labels that are not ignored (1 for a finding with one class).
    """
    if record_set.findings:
        if mode == "none":
            return [[1.0, 1.0] for _ in record_set.findings]
        return [[(p + n) / (2 * n), (p + n) / (2 * p)] if p and n else [1.0, 1.0]
                for p, n in record_set.finding_counts("train")]
    counts = record_set.class_counts("train")
    if mode == "none":
        return [1.0] * len(counts)
    labels = np.repeat(np.arange(len(counts)), counts)
    return compute_class_weight("balanced", classes=np.arange(len(counts)), y=labels).tolist()


def _with_batch_norm_sync(config, replicas, jit, log):
    """The config with `model.sync_batchnorm` decided for `replicas` (--sync_batchnorm), said in the log.

    TensorFlow all-reduces inside an XLA-compiled function only between GPUs, so on CPU replicas
    with XLA on, `auto` keeps per-replica statistics (with a warning) and `on` is refused."""
    per_replica = config.data.global_batch_size // replicas
    synchronized, reason = config.batch_norm_synchronized(replicas), "--sync_batchnorm=off"
    if synchronized and replicas > 1 and jit and not tf.config.list_physical_devices("GPU"):
        if config.sync_batchnorm == "on":
            raise InputError("--sync_batchnorm=on with --jit_compile=on needs GPUs (TensorFlow all-reduces inside "
                             "XLA only between GPUs); pass --jit_compile=off or --sync_batchnorm=off")
        synchronized, reason = False, "XLA on CPUs cannot all-reduce them"
    if synchronized and replicas > 1:
        log(f"BatchNorm statistics synchronized over the {replicas} replicas ({per_replica} images each; "
            f"--sync_batchnorm={config.sync_batchnorm}): one all-reduce per BatchNorm layer per step")
    elif replicas > 1 and per_replica < SMALL_REPLICA_BATCH:
        log(f"warning: {per_replica} images per replica give BatchNorm noisy statistics, kept per replica "
            f"({reason}); raise --batch_size to {SMALL_REPLICA_BATCH * replicas} or more")
    return dataclasses.replace(config, model=dataclasses.replace(config.model, sync_batchnorm=synchronized))


def _check_model_dir(config, chief):
    if not chief or not os.path.isdir(config.model_dir) or not os.listdir(config.model_dir):
        return
    if checkpointing.has_state(config.model_dir):
        if not config.resume:
            raise InputError(f"--model_dir={config.model_dir} holds a run; pass --resume to continue it "
                             "or choose a new --model_dir")
        return
    leftover = set(os.listdir(config.model_dir)) - {"flags.txt", "config.json", "tensorboard", "checkpoints"}
    if leftover:
        raise InputError(f"--model_dir={config.model_dir} holds files but no cxr_fast checkpoint "
                         f"({', '.join(sorted(leftover)[:3])}); choose a new --model_dir")


def train_and_evaluate(config, log=print, flags_text=None):
    """Trains as configured, resuming from model_dir when it holds a run; returns a summary dict.

    `flags_text`, the entry point's resolved flags, is kept as `{model_dir}/flags.txt`.
    """
    config.validate()
    # ---- setup
    if config.deterministic:  # before the first op; the seeds below make the rest reproducible
        tf.config.experimental.enable_op_determinism()
    strategy = strategy_lib.make_strategy(config.strategy, config.collective_timeout_secs)
    policy = strategy_lib.choose_precision(config.precision)
    keras.mixed_precision.set_global_policy(policy)
    jit = strategy_lib.choose_jit(config.jit_compile)
    keras.utils.set_random_seed(config.seed)
    chief, workers = strategy_lib.is_chief(strategy), strategy_lib.num_workers(strategy)
    _check_model_dir(config, chief)
    out = strategy_lib.WriteDir(config.model_dir, chief)
    os.makedirs(out.path, exist_ok=True)
    log(f"strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas, precision {policy}, "
        f"XLA {'on' if jit else 'off'}" + (", op determinism on" if config.deterministic else ""))
    config = _with_batch_norm_sync(config, strategy.num_replicas_in_sync, jit, log)

    # ---- data
    record_set = recordset.open_record_set(config.data.data_dir, config.data.verify)
    if record_set.findings:  # a multi-label set: one sigmoid per finding, named in the manifest
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, findings=record_set.findings))
        log(f"multi-label set: {len(record_set.findings)} findings ({', '.join(record_set.findings)})")
    else:  # the class names predict and the serving signature answer with
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, classes=record_set.classes))
    if chief:
        atomic.write_json(os.path.join(out.path, "config.json"), dataclasses.asdict(config))
        if flags_text:
            atomic.write_text(os.path.join(out.path, "flags.txt"), flags_text)
    if config.data.data_service:
        data_service.check_reachable(config.data.data_service)
    weights = class_weights(record_set, config.class_weight)
    global_batch = config.data.global_batch_size
    record_set.check_batch_size(global_batch)
    steps_per_epoch = config.steps_per_epoch or record_set.num_records("train") // global_batch
    steps_per_loop = config.steps_per_loop or (min(GPU_STEPS_PER_LOOP, steps_per_epoch)
                                               if tf.config.list_physical_devices("GPU") else 1)
    log(f"train {record_set.num_records('train')} records, {steps_per_epoch} steps of {global_batch} per epoch, "
        f"{steps_per_loop} per loop; class weights {np.round(weights, 4).tolist()}")

    # ---- model, optimizer, step functions
    ramp_epochs = config.augment_ramp()
    gate = config.augment_ramp_start_auc if ramp_epochs else 0.0
    steps = Steps(config, strategy, weights, policy, jit, ramp_steps=ramp_epochs * steps_per_epoch,
                  ramp_start=None if gate else 0)
    if ramp_epochs:
        log(f"augmentation ramps from no geometric change (flips only) to the full ranges over {ramp_epochs:g} "
            f"epochs ({round(ramp_epochs * steps_per_epoch)} steps; --augment_ramp_epochs), "
            + (f"starting after the first epoch with val AUC >= {gate:g} (--augment_ramp_start_auc)" if gate
               else "from the first step"))
    model, optimizer, position = steps.model, steps.optimizer, steps.position
    report = model_lib.parameter_report(model, steps.backbone, config.model)
    for line in model_lib.describe(report):
        log(line)
    run_state = checkpointing.RunState(out.path, tf.train.Checkpoint(model=model, optimizer=optimizer, **position),
                                       read_dir=config.model_dir)
    saved = run_state.load() if config.resume else None
    if workers > 1:
        _check_same_start(steps, position, config.model_dir)
    history = saved["history"] if saved else []
    started = ramp_start_epoch(history, gate) if gate else None
    if started is not None:  # a resumed run whose ramp had started
        steps.start_ramp(started * steps_per_epoch)
    if saved and saved.get("finished"):
        log(f"{config.model_dir} already holds a finished run; nothing to train")
        out.cleanup()
        return saved["summary"]
    epoch, step_in_epoch, global_step = (int(position[k].numpy()) for k in ("epoch", "step_in_epoch", "global_step"))
    if saved:
        log(f"resuming at epoch {epoch + 1}, step {step_in_epoch} (global step {global_step})")
    # Epoch e's sample order is a function of (seed, e): a resumed run skips the batches it consumed.
    data_config = config.data
    if config.data.data_service:  # the service's dynamic sharding is not reproducible: a fresh order
        seed = config.data.seed + global_step
        data_config = dataclasses.replace(data_config, seed=seed,
                                          service_job=data_service.job_name(config.model_dir, seed))
        log(f"training input from the tf.data service at {config.data.data_service} (job {data_config.service_job})")
    iterator = iter(strategy.distribute_datasets_from_function(
        pipeline.dataset_fn(record_set, data_config, (epoch, step_in_epoch), steps_per_epoch)))
    # At most a quarter of an epoch's steps (forward only: <~8% of the epoch's compute on small sets).
    precise_batches = min(config.precise_bn_batches, max(1, steps_per_epoch // 4))
    statistics_sample = None
    if precise_batches:
        statistics_sample = strategy.distribute_datasets_from_function(
            lambda context: pipeline.statistics_sample(record_set, config.data, precise_batches, context))
        log(f"precise BatchNorm statistics on {precise_batches} batches of {global_batch} before each validation")

    def validate():
        """Every worker reads the whole val split; all replicas score it together (each record once, in order)."""
        if statistics_sample:
            steps.precise_batch_norm(iter(statistics_sample), precise_batches)
        else:
            steps.sync_moving_statistics()
        labels, probs, _ = inference.predict_dataset(pipeline.eval_dataset(record_set, "val", config.data), steps.predict)
        return {**score(record_set, labels, probs), "spread": float(np.std(probs)) if len(probs) else 0.0}

    # ---- epochs, callbacks, checkpoints
    callbacks = [
        checkpointing.BestWeights(os.path.join(out.path, BEST_WEIGHTS), monitor="val_loss"),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.reduce_lr_factor,
                                          patience=config.reduce_lr_patience, min_lr=config.min_learning_rate),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience),
        keras.callbacks.TerminateOnNaN(),
    ]
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    callback_list.on_train_begin()
    if saved:
        checkpointing.restore_callback_state(callbacks, saved["callbacks"])
    summaries = tf.summary.create_file_writer(os.path.join(out.path, "tensorboard"))

    def checkpoint(epoch_totals):
        for name, value in (("epoch", epoch), ("step_in_epoch", step_in_epoch), ("global_step", global_step)):
            position[name].assign(value)
        run_state.save({"history": history, "callbacks": checkpointing.callback_state(callbacks),
                        "epoch_totals": epoch_totals, "finished": False}, global_step)

    last_checkpoint, built = time.time(), False
    while epoch < config.epochs and not model.stop_training:
        callback_list.on_epoch_begin(epoch)
        totals = _epoch_totals(saved["epoch_totals"] if saved and step_in_epoch else None)
        epoch_start, last_print = time.time(), 0.0
        while step_in_epoch < steps_per_epoch:
            count = min(steps_per_loop, steps_per_epoch - step_in_epoch)
            loop_start = time.time()
            loop = steps.train_loop(iterator, tf.constant(count), tf.constant(global_step, tf.int64)).numpy()
            elapsed = time.time() - loop_start
            if not built:
                built = True
                replicas = strategy.num_replicas_in_sync
                log(f"training step traced and built in {elapsed:.1f} s (first call"
                    + ("; the replica function is traced once per replica)" if replicas > 1 else ")"))
            totals += loop
            step_in_epoch += count
            global_step += count
            callback_list.on_train_batch_end(step_in_epoch, {"loss": totals[0] / totals[2]})
            if model.stop_training:  # TerminateOnNaN
                raise TrainingError(f"loss became NaN at epoch {epoch + 1}, step {step_in_epoch}; "
                                         "lower --learning_rate or try --precision=float32")
            if time.time() - last_print > 5 or step_in_epoch == steps_per_epoch:
                last_print = time.time()
                log(f"epoch {epoch + 1}/{config.epochs} step {step_in_epoch}/{steps_per_epoch} "
                    f"loss {totals[0] / totals[2]:.4f} acc {totals[1] / totals[2]:.3f} | "
                    f"{loop[3] / elapsed:,.0f} img/s" + ("" if config.deterministic else
                                                         f", input wait {100 * loop[4] / elapsed:.1f}%"))
            if step_in_epoch < steps_per_epoch and _checkpoint_due(steps, workers, time.time() - last_checkpoint,
                                                                   config.checkpoint_every_secs):
                checkpoint(totals.tolist())
                last_checkpoint = time.time()
                log(f"checkpoint saved at epoch {epoch + 1}, step {step_in_epoch}")
        val = validate()
        logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2],
                **{f"val_{k}": val[k] for k in ("loss", "accuracy", "auc", "precision", "recall", "count")},
                "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
                "augment_strength": (float(steps.augment_strength(global_step - 1))
                                     if config.augment.kind == "reference" else None),
                "seconds": time.time() - epoch_start}
        if workers > 1:  # the callbacks' decisions (LR, early stop) must be the same on every worker
            logs = _agreed(steps, logs)
        callback_list.on_epoch_end(epoch, logs)
        history.append({"epoch": epoch + 1, **{k: None if v is None else float(v) for k, v in logs.items()}})
        with summaries.as_default(step=epoch + 1):
            for key, value in history[-1].items():
                if key != "epoch" and value is not None:
                    tf.summary.scalar(key, value)
        log("epoch {epoch}: loss {loss:.4f} acc {accuracy:.3f} val_loss {val_loss:.4f} val_acc {val_accuracy:.3f} "
            "lr {learning_rate:.2e}".format(**history[-1]) + (f" val_auc {val['auc']:.3f}" if val["auc"] else ""))
        note = constant_predictions_note(val["spread"], logs["accuracy"], logs["val_accuracy"], precise_batches)
        if note:
            log(note)
        if gate and not steps.ramp_started:
            if ramp_start_epoch(history, gate) is not None:
                steps.start_ramp(global_step)
                log(f"val AUC {logs['val_auc']:.3f} >= {gate:g}: the augmentation's ranges ramp to full over the "
                    f"next {ramp_epochs:g} epochs (--augment_ramp_start_auc)")
            else:
                log(f"augmentation stays at flips only until an epoch's val AUC reaches {gate:g} "
                    "(--augment_ramp_start_auc)")
        epoch, step_in_epoch = epoch + 1, 0
        if chief:
            run_state.write_history(history)
        checkpoint([0.0] * 5)
        last_checkpoint = time.time()
    callback_list.on_train_end()
    if gate and not steps.ramp_started:
        log(f"warning: no epoch reached val AUC {gate:g}, so the geometric augmentation never started (flips "
            "only); train longer, start from ImageNet weights, or lower --augment_ramp_start_auc")

    # ---- best weights, final model, test score
    summary = _finish(config, model, record_set, history, out, steps.predict, log)
    run_state.save({"history": history, "callbacks": checkpointing.callback_state(callbacks), "epoch_totals": [0] * 5,
                    "finished": True, "summary": summary}, global_step)
    out.cleanup()
    if workers > 1:  # leave together: a worker still running when the chief exits logs heartbeat errors
        steps.gather([0.0])
    return summary


def _epoch_totals(saved):
    """[loss sum, correct, labels scored, images, seconds of input wait] of the epoch so far."""
    if saved is None:
        return np.zeros(5)
    if len(saved) == 4:  # a checkpoint written before images were counted apart from labels
        saved = [*saved[:3], saved[2], saved[3]]
    return np.array(saved, dtype=np.float64)


def score(record_set, labels, probs):
    """Validation and test scores: binary metrics, or a multi-label set's (macro AUC as `auc`)."""
    if record_set.findings:
        return multilabel.scores(labels, probs, record_set.findings)
    return metrics.binary_metrics(labels, probs)


def ramp_start_epoch(history, gate):
    """The epochs completed when a gated augmentation ramp starts: the first epoch (1-based) whose
    val AUC reached `gate`, or None.  A pure function of the history, so a resumed run restores it."""
    return next((h["epoch"] for h in history if (h.get("val_auc") or 0.0) >= gate), None)


def constant_predictions_note(spread, accuracy, val_accuracy, precise_batches, threshold=0.01):
    """One line when validation probabilities barely vary (std below `threshold`) while training
    accuracy is well above validation's: the evaluation-mode model ignores its input.
    `precise_batches`: the batches precise BatchNorm statistics were computed on (0: off)."""
    if spread >= threshold or accuracy < val_accuracy + 0.1:
        return None
    cause = (f"BatchNorm statistics recomputed on {precise_batches} batches did not help: try more "
             "(--precise_bn_batches), a lower --learning_rate, or --weights=imagenet"
             if precise_batches else
             "BatchNorm moving averages lag the weights: leave --precise_bn_batches on (default 8), or lower "
             "--bn_momentum (e.g. 0.9)")
    return (f"warning: validation predictions are nearly constant (std {spread:.4f}) while training accuracy is "
            f"{accuracy:.3f}; {cause}")


def _check_same_start(steps, position, model_dir):
    """Every worker must resume from the same step, or the first collective would hang."""
    starts = steps.gather([float(position["global_step"].numpy())])[:, 0]
    if len(set(starts)) > 1:
        raise ClusterError(f"the workers resume from different steps ({sorted({int(s) for s in starts})}): "
                           f"--model_dir={model_dir} must be a file system every worker reads (such as NFS), "
                           "and all workers need the same --model_dir")


def _checkpoint_due(steps, workers, seconds_since, every_secs):
    """Whether to save a mid-epoch checkpoint now: the chief's clock decides for every worker.

    Saving is collective, so a worker whose own clock said "not yet" would leave the others
    waiting in the save; one gather per loop call (only with several workers) shares the answer.
    """
    due = seconds_since >= every_secs
    if workers > 1:
        due = bool(steps.gather([float(due)])[0, 0])
    return due


def _agreed(steps, logs):
    """Epoch logs averaged over the replicas (equal already, up to non-deterministic GPU kernels)."""
    keys = [k for k, v in logs.items() if v is not None]
    means = steps.gather([logs[k] for k in keys]).mean(axis=0)
    return {**logs, **{k: float(v) for k, v in zip(keys, means)}}


def weights_fingerprint(model):
    """sha256 of every weight's bytes, in order: equal on all workers of a run, logged at the end."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def _finish(config, model, record_set, history, out, predict_fn, log):
    best = os.path.join(out.path, BEST_WEIGHTS)
    if os.path.isfile(best):
        model.load_weights(best)
    summary = {"epochs_trained": len(history), "best_epoch": None, "model": None, "test": None,
               "weights_sha256": weights_fingerprint(model)}
    log(f"weights sha256 {summary['weights_sha256']}")
    finite = [h for h in history if h["val_loss"] is not None and math.isfinite(h["val_loss"])]
    if finite:
        summary["best_epoch"] = min(finite, key=lambda h: h["val_loss"])["epoch"]
    if out.chief:
        path = os.path.join(config.model_dir, inference.FINAL_MODEL)
        with atomic.replacing(path) as temporary:
            model.save(temporary)
        summary["model"] = path
    if record_set.files.get("test"):
        labels, probs, _ = inference.predict_dataset(pipeline.eval_dataset(record_set, "test", config.data), predict_fn)
        summary["test"] = score(record_set, labels, probs)
        log("test: " + ", ".join(f"{k} {summary['test'][k]:.4f}" for k in ("loss", "accuracy", "auc", "precision",
                                                                        "recall", "f1") if summary["test"][k] is not None))
    if out.chief and config.export_dir:
        summary["export"] = savedmodel.export(model, config.export_dir, inputs=config.inputs(), command="train",
                                              findings=config.model.findings, classes=config.model.classes)
        log(f"SavedModel for serving in {summary['export']}")
    if out.chief:
        atomic.write_json(os.path.join(config.model_dir, "summary.json"), summary)
    return summary
