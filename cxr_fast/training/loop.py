"""The custom distributed training loop: one code path for one device, one host, many hosts.

`train_and_evaluate` reads top to bottom, each piece a function of a `Run` (what the run holds
once set up) and a `Position` (epoch, step in epoch, global step), no closures over loop state:
`_setup` (strategy, precision, XLA, outputs; record set and class weights; model, optimizer and
step functions from `cxr_fast.training.steps`) -> `_resume` (the checkpoint, if any) -> per epoch
`train_one_epoch` (`steps_per_loop` steps per tf.function call, mid-epoch checkpoints),
`validate` (precise BatchNorm statistics, val scored by all replicas) and `end_of_epoch`
(callbacks, history, the ramp's gate, checkpoint) -> `_finish_run` (best weights, model.keras,
test score, export).

The record set's task (`cxr_fast.tasks.task`: binary, or one sigmoid per finding) decides the
head, class weights, loss and scores; a multi-label set's val_auc is the macro AUC over findings.
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

from cxr_fast import atomic
from cxr_fast.config import SMALL_REPLICA_BATCH
from cxr_fast.data import mixture, pipeline
from cxr_fast.distributed import service as data_service
from cxr_fast.distributed import strategy as strategy_lib
from cxr_fast.errors import ClusterError, InputError, TrainingError
from cxr_fast.serving import inference, savedmodel
from cxr_fast.tasks import task as task_lib
from cxr_fast.training import checkpointing
from cxr_fast.training import model as model_lib
from cxr_fast.training.steps import Steps

BEST_WEIGHTS = "best.weights.h5"
GPU_STEPS_PER_LOOP = 50  # steps per tf.function call on GPUs (--steps_per_loop=0): Python's per-call cost amortized


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


@dataclasses.dataclass
class Position:
    """Where a run stands: epochs completed, steps into the current epoch, steps in all."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0


@dataclasses.dataclass
class Run:
    """What one training run holds once it is set up (`_setup`); the loop's functions take it
    and a `Position` as arguments instead of closing over loop variables."""

    config: object
    log: object
    strategy: object
    steps: Steps
    record_set: object
    out: object
    chief: bool
    workers: int
    steps_per_epoch: int
    steps_per_loop: int
    ramp_epochs: float  # 0: no augmentation ramp
    gate: float  # the val AUC that starts the ramp (0: from the first step)
    precise_batches: int
    run_state: object = None
    callbacks: list = None
    callback_list: object = None
    summaries: object = None
    last_checkpoint: float = 0.0  # time.time() of the last save
    built: bool = False  # the first train_loop call traced and built the step

    @property
    def model(self):
        return self.steps.model


def train_and_evaluate(config, log=print, flags_text=None):
    """Trains as configured, resuming from model_dir when it holds a run; returns a summary dict.

    `flags_text`, the entry point's resolved flags, is kept as `{model_dir}/flags.txt`.
    """
    config.validate()
    run = _setup(config, log, flags_text)
    saved, position = _resume(run)
    if saved and saved.get("finished"):
        log(f"{config.model_dir} already holds a finished run; nothing to train")
        run.out.cleanup()
        return saved["summary"]
    history = saved["history"] if saved else []
    iterator = iter(run.strategy.distribute_datasets_from_function(_training_input(run, position)))
    statistics_sample = _statistics_sample(run)
    _start_callbacks(run, saved)
    totals = _epoch_totals(saved["epoch_totals"] if saved and position.step_in_epoch else None)
    while position.epoch < config.epochs and not run.model.stop_training:
        run.callback_list.on_epoch_begin(position.epoch)
        epoch_start = time.time()
        totals = train_one_epoch(run, iterator, position, totals, history)
        val = validate(run, statistics_sample)
        end_of_epoch(run, position, history, totals, val, time.time() - epoch_start)
        totals = _epoch_totals(None)
    run.callback_list.on_train_end()
    if run.gate and not run.steps.ramp.started:
        log(f"warning: no epoch reached val AUC {run.gate:g}, so the geometric augmentation never started (flips "
            "only); train longer, start from ImageNet weights, or lower --augment_ramp_start_auc")
    return _finish_run(run, position, history)


def _setup(config, log, flags_text):
    """Strategy, precision and XLA; the record set and its class weights; model, optimizer and
    step functions; the output folder with config.json and flags.txt."""
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
    record_set = mixture.open_records(config.data.data_dir, config.data.verify, config.data.findings, config.data.mix)
    log(record_set.describe())
    task = task_lib.for_record_set(record_set)
    config = _with_task(config, task, log)
    if chief:
        atomic.write_json(os.path.join(out.path, "config.json"), dataclasses.asdict(config))
        if flags_text:
            atomic.write_text(os.path.join(out.path, "flags.txt"), flags_text)
    if config.data.data_service:
        data_service.check_reachable(config.data.data_service)
    weights = task.class_weights(record_set, config.class_weight)
    global_batch = config.data.global_batch_size
    record_set.check_batch_size(global_batch)
    steps_per_epoch = config.steps_per_epoch or record_set.num_records("train") // global_batch
    steps_per_loop = config.steps_per_loop or (min(GPU_STEPS_PER_LOOP, steps_per_epoch)
                                               if tf.config.list_physical_devices("GPU") else 1)
    log(f"train {record_set.num_records('train')} records, {steps_per_epoch} steps of {global_batch} per epoch, "
        f"{steps_per_loop} per loop; class weights {np.round(weights, 4).tolist()}")
    ramp_epochs = config.augment_ramp()
    gate = config.augment_ramp_start_auc if ramp_epochs else 0.0
    steps = Steps(config, strategy, weights, policy, jit, ramp_steps=ramp_epochs * steps_per_epoch,
                  ramp_start=None if gate else 0)
    _log_ramp(ramp_epochs, gate, steps_per_epoch, log)
    for line in model_lib.describe(model_lib.parameter_report(steps.model, steps.backbone, config.model)):
        log(line)
    # At most a quarter of an epoch's steps (forward only: <~8% of the epoch's compute on small sets).
    precise_batches = min(config.precise_bn_batches, max(1, steps_per_epoch // 4))
    return Run(config, log, strategy, steps, record_set, out, chief, workers, steps_per_epoch, steps_per_loop,
               ramp_epochs, gate, precise_batches)


def _with_task(config, task, log):
    """The config with what the record set's task decides: the findings (one sigmoid each) or the
    class names, which predict and the serving signature answer with."""
    log(task.describe())
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **task.model_fields()))


def _log_ramp(ramp_epochs, gate, steps_per_epoch, log):
    if ramp_epochs:
        log(f"augmentation ramps from no geometric change (flips only) to the full ranges over {ramp_epochs:g} "
            f"epochs ({round(ramp_epochs * steps_per_epoch)} steps; --augment_ramp_epochs), "
            + (f"starting after the first epoch with val AUC >= {gate:g} (--augment_ramp_start_auc)" if gate
               else "from the first step"))


def _resume(run):
    """(the saved run state or None, the Position to start from); a resumed run's ramp restarts
    where it had started, and every worker must start from the same step."""
    steps = run.steps
    checkpoint = tf.train.Checkpoint(model=steps.model, optimizer=steps.optimizer, **steps.position)
    run.run_state = checkpointing.RunState(run.out.path, checkpoint, read_dir=run.config.model_dir)
    saved = run.run_state.load() if run.config.resume else None
    if run.workers > 1:
        _check_same_start(steps, steps.position, run.config.model_dir)
    started = ramp_start_epoch(saved["history"], run.gate) if saved and run.gate else None
    if started is not None:  # a resumed run whose ramp had started
        steps.ramp.start(started * run.steps_per_epoch)
    position = Position(*(int(steps.position[k].numpy()) for k in ("epoch", "step_in_epoch", "global_step")))
    if saved and not saved.get("finished"):
        run.log(f"resuming at epoch {position.epoch + 1}, step {position.step_in_epoch} "
                f"(global step {position.global_step})")
    return saved, position


def _training_input(run, position):
    """The dataset function of the training stream from `position`: epoch e's order is a function
    of (seed, e), so a resumed run skips the batches it consumed; the tf.data service's dynamic
    sharding is not reproducible, so through it the order is a fresh one."""
    data_config = run.config.data
    if data_config.data_service:
        seed = data_config.seed + position.global_step
        data_config = dataclasses.replace(data_config, seed=seed,
                                          service_job=data_service.job_name(run.config.model_dir, seed))
        run.log(f"training input from the tf.data service at {data_config.data_service} "
                f"(job {data_config.service_job})")
    return pipeline.dataset_fn(run.record_set, data_config, (position.epoch, position.step_in_epoch),
                               run.steps_per_epoch)


def _statistics_sample(run):
    """The fixed training sample precise BatchNorm statistics are computed on (None: off)."""
    if not run.precise_batches:
        return None
    run.log(f"precise BatchNorm statistics on {run.precise_batches} batches of {run.config.data.global_batch_size} "
            "before each validation")
    return run.strategy.distribute_datasets_from_function(
        lambda context: pipeline.statistics_sample(run.record_set, run.config.data, run.precise_batches, context))


def _start_callbacks(run, saved):
    """The reference's callbacks (best weights, ReduceLROnPlateau, EarlyStopping) and NaN's stop,
    restored from the checkpoint when resuming; the TensorBoard writer."""
    config = run.config
    run.callbacks = [
        checkpointing.BestWeights(os.path.join(run.out.path, BEST_WEIGHTS), monitor="val_loss"),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.reduce_lr_factor,
                                          patience=config.reduce_lr_patience, min_lr=config.min_learning_rate),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience),
        keras.callbacks.TerminateOnNaN(),
    ]
    run.callback_list = keras.callbacks.CallbackList(run.callbacks, model=run.model)
    run.callback_list.on_train_begin()
    if saved:
        checkpointing.restore_callback_state(run.callbacks, saved["callbacks"])
    run.summaries = tf.summary.create_file_writer(os.path.join(run.out.path, "tensorboard"))
    run.last_checkpoint = time.time()


def save_checkpoint(run, position, history, epoch_totals, finished=False, summary=None):
    """The run's state at `position`: weights, optimizer, position, history, callbacks."""
    for name, value in dataclasses.asdict(position).items():
        run.steps.position[name].assign(value)
    state = {"history": history, "callbacks": checkpointing.callback_state(run.callbacks),
             "epoch_totals": epoch_totals, "finished": finished}
    run.run_state.save({**state, "summary": summary} if finished else state, position.global_step)
    run.last_checkpoint = time.time()


def train_one_epoch(run, iterator, position, totals, history):
    """Trains from `position` to the end of its epoch, `steps_per_loop` steps per call, logging
    progress and saving mid-epoch checkpoints when due; returns the epoch's totals."""
    config, last_print = run.config, 0.0
    while position.step_in_epoch < run.steps_per_epoch:
        count = min(run.steps_per_loop, run.steps_per_epoch - position.step_in_epoch)
        loop_start = time.time()
        loop = run.steps.train_loop(iterator, tf.constant(count), tf.constant(position.global_step, tf.int64)).numpy()
        elapsed = time.time() - loop_start
        if not run.built:
            run.built = True
            run.log(f"training step traced and built in {elapsed:.1f} s (first call"
                    + ("; the replica function is traced once per replica)" if run.strategy.num_replicas_in_sync > 1
                       else ")"))
        totals += loop
        position.step_in_epoch += count
        position.global_step += count
        run.callback_list.on_train_batch_end(position.step_in_epoch, {"loss": totals[0] / totals[2]})
        if run.model.stop_training:  # TerminateOnNaN
            raise TrainingError(f"loss became NaN at epoch {position.epoch + 1}, step {position.step_in_epoch}; "
                                "lower --learning_rate or try --precision=float32")
        if time.time() - last_print > 5 or position.step_in_epoch == run.steps_per_epoch:
            last_print = time.time()
            run.log(f"epoch {position.epoch + 1}/{config.epochs} step {position.step_in_epoch}/{run.steps_per_epoch} "
                    f"loss {totals[0] / totals[2]:.4f} acc {totals[1] / totals[2]:.3f} | "
                    f"{loop[3] / elapsed:,.0f} img/s" + ("" if config.deterministic else
                                                         f", input wait {100 * loop[4] / elapsed:.1f}%"))
        if position.step_in_epoch < run.steps_per_epoch and _checkpoint_due(
                run.steps, run.workers, time.time() - run.last_checkpoint, config.checkpoint_every_secs):
            save_checkpoint(run, position, history, totals.tolist())
            run.log(f"checkpoint saved at epoch {position.epoch + 1}, step {position.step_in_epoch}")
    return totals


def validate(run, statistics_sample):
    """BatchNorm statistics for the current weights, then the val split scored by all replicas
    together (every worker reads all of it; each record once, in order)."""
    if statistics_sample:
        run.steps.statistics.precise(iter(statistics_sample), run.precise_batches)
    else:
        run.steps.statistics.sync()
    val_input = pipeline.eval_dataset(run.record_set, "val", run.config.data)
    labels, probs, _ = inference.predict_dataset(val_input, run.steps.predict)
    return {**run.steps.task.score(labels, probs), "spread": float(np.std(probs)) if len(probs) else 0.0}


def end_of_epoch(run, position, history, totals, val, seconds):
    """The epoch's logs (agreed by all workers) to the callbacks, history and TensorBoard; the
    augmentation ramp's gate; the position moved to the next epoch and checkpointed."""
    config, steps = run.config, run.steps
    logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2],
            **{f"val_{k}": val[k] for k in ("loss", "accuracy", "auc", "precision", "recall", "count")},
            "learning_rate": float(keras.ops.convert_to_numpy(steps.optimizer.learning_rate)),
            "augment_strength": (float(steps.ramp.strength(position.global_step - 1))
                                 if config.augment.kind == "reference" else None),
            "seconds": seconds}
    if run.workers > 1:  # the callbacks' decisions (LR, early stop) must be the same on every worker
        logs = _agreed(steps, logs)
    run.callback_list.on_epoch_end(position.epoch, logs)
    history.append({"epoch": position.epoch + 1, **{k: None if v is None else float(v) for k, v in logs.items()}})
    with run.summaries.as_default(step=position.epoch + 1):
        for key, value in history[-1].items():
            if key != "epoch" and value is not None:
                tf.summary.scalar(key, value)
    run.log("epoch {epoch}: loss {loss:.4f} acc {accuracy:.3f} val_loss {val_loss:.4f} val_acc {val_accuracy:.3f} "
            "lr {learning_rate:.2e}".format(**history[-1]) + (f" val_auc {val['auc']:.3f}" if val["auc"] else ""))
    note = constant_predictions_note(val["spread"], logs["accuracy"], logs["val_accuracy"], run.precise_batches)
    if note:
        run.log(note)
    _gate_ramp(run, history, position.global_step)
    position.epoch, position.step_in_epoch = position.epoch + 1, 0
    if run.chief:
        run.run_state.write_history(history)
    save_checkpoint(run, position, history, [0.0] * 5)


def _gate_ramp(run, history, global_step):
    """Starts the augmentation ramp after the first epoch whose val AUC reached the gate."""
    if not run.gate or run.steps.ramp.started:
        return
    if ramp_start_epoch(history, run.gate) is not None:
        run.steps.ramp.start(global_step)
        run.log(f"val AUC {history[-1]['val_auc']:.3f} >= {run.gate:g}: the augmentation's ranges ramp to full over "
                f"the next {run.ramp_epochs:g} epochs (--augment_ramp_start_auc)")
    else:
        run.log(f"augmentation stays at flips only until an epoch's val AUC reaches {run.gate:g} "
                "(--augment_ramp_start_auc)")


def _finish_run(run, position, history):
    """Best weights, final model, test score and export; the finished state checkpointed."""
    summary = _finish(run.config, run.model, (run.record_set, run.steps.task), history, run.out, run.steps.predict,
                      run.log)
    save_checkpoint(run, position, history, [0] * 5, finished=True, summary=summary)
    run.out.cleanup()
    if run.workers > 1:  # leave together: a worker still running when the chief exits logs heartbeat errors
        run.steps.gather([0.0])
    return summary


def _epoch_totals(saved):
    """[loss sum, correct, labels scored, images, seconds of input wait] of the epoch so far."""
    if saved is None:
        return np.zeros(5)
    if len(saved) == 4:  # a checkpoint written before images were counted apart from labels
        saved = [*saved[:3], saved[2], saved[3]]
    return np.array(saved, dtype=np.float64)


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


def _finish(config, model, data, history, out, predict_fn, log):
    """Best weights, model.keras, the test score and the export; `data`: (record set, its task)."""
    record_set, task = data
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
        summary["test"] = task.score(labels, probs)
        log("test: " + ", ".join(f"{k} {summary['test'][k]:.4f}" for k in ("loss", "accuracy", "auc", "precision",
                                                                        "recall", "f1") if summary["test"][k] is not None))
    if out.chief and config.export_dir:
        summary["export"] = savedmodel.export(model, config.export_dir, task=task, inputs=config.inputs(),
                                              command="train")
        log(f"SavedModel for serving in {summary['export']}")
    if out.chief:
        atomic.write_json(os.path.join(config.model_dir, "summary.json"), summary)
    return summary
