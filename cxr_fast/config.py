"""Frozen configuration dataclasses, one per kind of run.

Entry points validate their flags and build one of these; library functions take the config
and never read flags, so tests build configs directly.  `validate()` raises InputError naming
the flag, so a bad value is reported before any work starts.
"""
import dataclasses
import math
import os
import re

from cxr_fast.errors import InputError

SPLIT_POLICIES = ("patient", "image", "official")  # how tools.make_tfrecords assigns patients to splits
LABEL_FORMATS = ("nih", "chexpert", "mimic", "rsna", "csv")  # tools.make_tfrecords --format
ENCODINGS = ("jpeg", "png", "raw")  # how records store their images
DEFAULT_MAX_PIXELS = 64_000_000  # 8k x 8k; the largest Kermany film is 2916 x 2713 (7.9 MP)
DEFAULT_MAX_BYTES = 32 * 2**20  # per served image; a 16-bit 3000x3000 PNG film is ~18 MB
LIMIT_CEILING = 2**40  # --max_image_pixels / --max_image_bytes above this are typos (a TB of pixels)
MAX_IMAGE_SIZE = 4096  # pixels a side: a decoded 4096 x 4096 film is 16 MB; a typo of 100000 would be 10 GB
MAX_SEED = 2**31 - 1
MAX_JPEG_SCANS = 64  # a progressive JPEG costs a pass over the image per scan; encoders write 6-10
FILE_HEADER_BYTES = 16 * 2**20  # what a film file may carry beyond its pixels (DICOM headers, ICC, EXIF)


def max_file_bytes(max_pixels):
    """The most bytes an image file (a DICOM's inflated dataset too) may hold: two per allowed
    pixel (16-bit films) plus FILE_HEADER_BYTES; 144 MB at the default 64 MP."""
    return 2 * max_pixels + FILE_HEADER_BYTES


def check_range(flag, value, low, high, unit=""):
    """An InputError naming `flag` unless low <= value <= high."""
    if not low <= value <= high:
        raise InputError(f"{flag}={value} must be in {low}..{high}{unit}")


def check_finite(**values):
    """An InputError naming the first flag whose value is NaN or infinite."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise InputError(f"--{name}={value} must be a finite number")


def parse_floats(values, flag, example):
    """A list flag's strings as a tuple of floats; else an InputError naming `flag` with an example."""
    try:
        return tuple(float(value) for value in values)
    except ValueError:
        raise InputError(f"{flag}={','.join(values)} must be numbers, e.g. {example}") from None


_HOST_PORT = r"[^:/\s]+:\d{1,5}"


def check_service_address(address, flag, scheme="grpc://"):
    """A tf.data service address, {scheme}HOST:PORT; else an InputError naming `flag`."""
    if not re.fullmatch(re.escape(scheme) + _HOST_PORT, address):
        raise InputError(f"{flag}={address} must look like {scheme}HOST:PORT (the dispatcher started by "
                         "`python -m tools.data_service`)")
    return address


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Settings of `tools.make_tfrecords`: a data folder -> a split, sharded TFRecord set."""

    data_dir: str
    output_dir: str
    split: str = "patient"
    split_fractions: tuple = (0.6, 0.2, 0.2)
    seed: int = 42
    image_size: int = 128
    encoding: str = "jpeg"
    jpeg_quality: int = 95
    shard_size_mb: float = 100.0
    min_shards: int = 1  # per split; N hosts read disjoint shards: write at least 10 per host
    num_workers: int = 0  # 0: all cores
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False
    # A label file instead of NORMAL/PNEUMONIA folders (see `cxr_fast.data.labelfiles`)
    labels: str = ""
    format: str = ""  # nih | chexpert | mimic | rsna | csv
    path_column: str = ""  # csv: image path relative to data_dir
    patient_column: str = ""  # csv: patient id
    label_columns: tuple = ()  # csv: one (binary set) or more (multi-label) columns of 1 / 0 / -1 / blank
    view_column: str = ""  # csv: view position, for --view
    uncertain: str = "ignore"  # -1 labels: ignore (masked out of the loss) | ones | zeros (CheXpert's U-*)
    views: tuple = ()  # keep only these view positions (e.g. PA, AP: frontal films)

    def validate(self):
        self._validate_labels()
        if not os.path.isdir(self.data_dir):
            raise InputError(f"--data_dir={self.data_dir} is not a folder; point it at the chest X-ray images")
        if self.split not in SPLIT_POLICIES:
            raise InputError(f"--split={self.split} is not one of {', '.join(SPLIT_POLICIES)}")
        fractions = self.split_fractions
        check_finite(shard_size_mb=self.shard_size_mb)
        if (len(fractions) != 3 or not all(math.isfinite(f) and f >= 0 for f in fractions)
                or abs(sum(fractions) - 1) > 1e-6):
            raise InputError(f"--split_fractions={','.join(map(str, fractions))} must be three non-negative "
                             "numbers (train,val,test) that sum to 1")
        if fractions[0] <= 0 or fractions[1] <= 0:
            raise InputError("--split_fractions needs a train and a val fraction above 0")
        if self.image_size < 0 or 0 < self.image_size < 8:
            raise InputError(f"--image_size={self.image_size}: use 0 (full resolution) or at least 8 pixels")
        if self.image_size:
            check_range("--image_size", self.image_size, 8, MAX_IMAGE_SIZE, " pixels")
        check_range("--seed", self.seed, 0, MAX_SEED)
        if self.encoding not in ENCODINGS:
            raise InputError(f"--encoding={self.encoding} is not one of {', '.join(ENCODINGS)}")
        if self.encoding == "raw" and self.image_size == 0:
            raise InputError("--encoding=raw needs a fixed --image_size (images of full resolution differ in size)")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"--jpeg_quality={self.jpeg_quality} must be in 1..100")
        if self.shard_size_mb <= 0:
            raise InputError(f"--shard_size_mb={self.shard_size_mb} must be above 0")
        if self.min_shards < 1:
            raise InputError(f"--min_shards={self.min_shards} must be at least 1")
        if self.num_workers < 0:
            raise InputError(f"--num_workers={self.num_workers} must be 0 (all cores) or more")
        check_range("--max_image_pixels", self.max_image_pixels, 1, LIMIT_CEILING)
        out, data = os.path.abspath(self.output_dir), os.path.abspath(self.data_dir)
        if out == data or out.startswith(data + os.sep):
            raise InputError(f"--output_dir={self.output_dir} lies inside --data_dir; write the records elsewhere")
        return self

    def inputs(self):
        """What the conversion reads, which its output folder may never replace."""
        return [(self.data_dir, "the images (--data_dir)"), (self.labels, "the label file (--labels)")]

    def _validate_labels(self):
        if not self.labels:
            if self.format or self.label_columns or self.views:
                raise InputError("--format, --label_columns and --view need --labels (a label file)")
            return
        if self.format not in LABEL_FORMATS:
            raise InputError(f"--labels needs --format, one of {', '.join(LABEL_FORMATS)}")
        if not os.path.isfile(self.labels):
            raise InputError(f"--labels={self.labels}: no such file")
        if self.uncertain not in ("ignore", "ones", "zeros"):
            raise InputError(f"--uncertain={self.uncertain} must be ignore, ones or zeros")
        if self.format == "csv" and not (self.path_column and self.patient_column and self.label_columns):
            raise InputError("--format=csv needs --path_column, --patient_column and --label_columns")
        if self.format == "csv" and self.views and not self.view_column:
            raise InputError("--view with --format=csv needs --view_column (the column of view positions)")
        if self.split == "official" and self.format in ("rsna", "csv"):
            raise InputError(f"--split=official: the {self.format} label file has no official split; "
                             "use --split=patient")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Settings of `tools.make_synthetic`: a generated chest film set in the Kermany layout."""

    output_dir: str
    num_patients: int = 400
    seed: int = 0
    difficulty: float = 0.5  # 0: opacities obvious; 1: barely visible
    min_size: int = 900
    max_size: int = 2000
    kaggle_quirks: bool = False  # add the Kaggle zip's nested duplicate copy and __MACOSX junk
    position_shift: float = 0.0  # each film placed off centre by up to this fraction of its size, in x and y
    position_rotation: float = 0.0  # ... and turned by up to this many degrees (patients who stand askew)
    format: str = ""  # "": the Kermany folder layout; nih | chexpert | mimic | rsna | csv: that set's label files
    num_workers: int = 0
    overwrite: bool = False

    def validate(self):
        if self.format and self.format not in LABEL_FORMATS:
            raise InputError(f"--format={self.format} is not one of {', '.join(LABEL_FORMATS)}")
        if not 0.0 <= self.position_shift <= 0.5 or not 0.0 <= self.position_rotation <= 90.0:
            raise InputError("--position_shift must be in [0, 0.5] and --position_rotation in [0, 90] degrees")
        if self.num_patients < 4:
            raise InputError(f"--num_patients={self.num_patients}: need at least 4 (both classes, train and test)")
        if not 0.0 <= self.difficulty <= 1.0:
            raise InputError(f"--difficulty={self.difficulty} must be in [0, 1]")
        if not 32 <= self.min_size <= self.max_size:
            raise InputError(f"--size_range={self.min_size},{self.max_size}: need 32 <= min <= max")
        if self.num_workers < 0:
            raise InputError(f"--num_workers={self.num_workers} must be 0 (all cores) or more")
        return self


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How `cxr_fast.data.pipeline` reads a record set for training and evaluation."""

    data_dir: str
    image_size: int = 128  # model input; records of another stored size are resized on the fly
    global_batch_size: int = 64
    channels: int = 1  # 1: the model replicates gray on the device (3x less to move and augment)
    cache: str = "auto"  # auto: in memory when the decoded split fits cache_budget_mb
    cache_budget_mb: int = 4096  # building the cached tensor briefly holds the decoded split twice
    shuffle_buffer: int = 16384
    seed: int = 42
    verify: bool = False  # sha256 of every shard against the manifest before reading
    num_threads: int = 0  # tf.data thread pool size; 0: TensorFlow's default (all cores)
    ram_budget_mb: int = 0  # tf.data autotune RAM budget; 0: TensorFlow's default
    decode_batch: int = 256  # records parsed and decoded per vectorized call
    data_service: str = ""  # grpc://HOST:PORT of a tf.data service dispatcher: decode there, not here
    service_job: str = "cxr_fast"  # the job all trainers of one run share (the trainer names it per run)
    findings: tuple = ()  # train on these aligned findings only; (): the union of the sets' findings
    mix: str = "proportional"  # several sets (data_dir a,b,...): proportional | equal | W1,W2,...

    def validate(self):
        check_range("--image_size", self.image_size, 8, MAX_IMAGE_SIZE, " pixels")
        self._validate_mix()
        check_range("--seed", self.seed, 0, MAX_SEED)
        if self.global_batch_size < 1:
            raise InputError(f"--batch_size={self.global_batch_size} must be at least 1")
        if self.channels not in (1, 3):
            raise InputError(f"--channels={self.channels} must be 1 or 3")
        if self.cache not in ("auto", "memory", "none"):
            raise InputError(f"--cache={self.cache} must be auto, memory or none")
        if min(self.cache_budget_mb, self.shuffle_buffer, self.num_threads, self.ram_budget_mb) < 0:
            raise InputError("--cache_budget_mb, --shuffle_buffer, --num_threads and --ram_budget_mb "
                             "must not be negative")
        if self.data_service:
            check_service_address(self.data_service, "--data_service")
        return self

    def _validate_mix(self):
        if self.mix in ("proportional", "equal"):
            return
        weights = parse_floats(self.mix.split(","), "--mix", "proportional, equal or 3,1")
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise InputError(f"--mix={self.mix}: weights must be numbers above 0, one per record set")

    @property
    def data_dirs(self):
        """The record sets of --data_dir (one, or several joined by commas)."""
        return tuple(d for d in self.data_dir.split(",") if d)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The reference's ImageDataGenerator settings, in its own units (see `cxr_fast.training.augment`)."""

    kind: str = "reference"  # reference | none
    impl: str = "fused"  # fused: one affine resample per image; chain: five keras-cv layers
    rotation_deg: float = 30.0
    width_shift: float = 0.2
    height_shift: float = 0.2
    shear_deg: float = 0.2  # ImageDataGenerator's shear_range is in degrees
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: str = "nearest"

    def validate(self):
        if self.kind not in ("reference", "none"):
            raise InputError(f"--augment={self.kind} must be reference or none")
        if self.impl not in ("fused", "chain"):
            raise InputError(f"--augment_impl={self.impl} must be fused or chain")
        if not 0 <= self.rotation_deg <= 180 or not 0 <= self.shear_deg < 90:
            raise InputError("--rotation_range must be in [0, 180] and --shear_range in [0, 90) degrees")
        if not (0 <= self.width_shift < 1 and 0 <= self.height_shift < 1 and 0 <= self.zoom < 1):
            raise InputError("--width_shift_range, --height_shift_range and --zoom_range must be in [0, 1)")
        if self.fill_mode not in ("nearest", "reflect", "wrap", "constant"):
            raise InputError(f"--fill_mode={self.fill_mode} must be nearest, reflect, wrap or constant")
        return self


# Below this many images per replica BatchNorm's per-replica statistics get noisy (Wu & He 2018,
# Group Normalization, Fig. 1: ImageNet error rises below 16 per GPU); --sync_batchnorm=auto syncs.
SMALL_REPLICA_BATCH = 16

BACKBONES = tuple(f"B{i}" for i in range(8)) + ("tiny",)  # tiny: a small CNN for plumbing checks


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """EfficientNet backbone + the reference head (see `cxr_fast.training.model`)."""

    backbone: str = "B2"
    image_size: int = 128
    channels: int = 1  # input channels; gray is replicated to RGB inside the model
    weights: str = "imagenet"  # imagenet | none | path to a Keras weights file of the backbone
    freeze_layers: int = 0  # freeze the first N backbone layers (model 1: 10) ...
    freeze_fraction: float = 0.0  # ... or this fraction of them (model 2: 0.7)
    bn_momentum: float = 0.0  # 0 keeps Keras' 0.99; short runs from scratch want ~0.9
    head_dropout: tuple = (0.3, 0.2)  # the reference head's two dropout rates
    findings: tuple = ()  # a multi-label set's findings: one sigmoid each; (): the reference's one output
    classes: tuple = ()  # a binary set's class names, label order (RSNA: NO_PNEUMONIA, PNEUMONIA); (): Kermany's
    sync_batchnorm: bool = False  # BatchNorm moments over the global batch (all replicas), not each replica's

    def validate(self):
        if self.backbone not in BACKBONES:
            raise InputError(f"--backbone={self.backbone} is not one of {', '.join(BACKBONES)}")
        if self.backbone == "tiny" and self.weights == "imagenet":
            raise InputError("--backbone=tiny has no ImageNet weights; pass --weights=none (or a weights file)")
        if self.weights not in ("imagenet", "none") and not os.path.isfile(self.weights):
            raise InputError(f"--weights={self.weights}: no such file; use imagenet, none, or the path of a "
                             "Keras weights file (.weights.h5 or .h5) of the backbone without its top")
        if self.freeze_layers < 0 or not 0.0 <= self.freeze_fraction <= 1.0:
            raise InputError("--freeze_layers must be >= 0 and --freeze_fraction in [0, 1]")
        if self.freeze_layers and self.freeze_fraction:
            raise InputError("give --freeze_layers or --freeze_fraction, not both")
        check_range("--image_size", self.image_size, 32, MAX_IMAGE_SIZE, " pixels")  # 32: EfficientNet's smallest
        if len(self.head_dropout) != 2 or not all(0.0 <= rate < 1.0 for rate in self.head_dropout):
            raise InputError(f"--head_dropout={','.join(map(str, self.head_dropout))} must be two rates in [0, 1)")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise InputError(f"--bn_momentum={self.bn_momentum} must be in [0, 1); 0 keeps Keras' 0.99")
        return self


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: data, model, augmentation, optimization, distribution, outputs."""

    model_dir: str
    data: DataConfig
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    epochs: int = 30
    learning_rate: float = 1e-3
    class_weight: str = "balanced"  # balanced (sklearn's formula on the training labels) | none
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16
    jit_compile: str = "auto"  # auto | on | off
    steps_per_epoch: int = 0  # 0: one pass over the training records
    steps_per_loop: int = 0  # steps inside one tf.function call; 0: 1 on CPU, up to 50 on GPUs
    precise_bn_batches: int = 8  # BatchNorm statistics recomputed on up to this many batches (<= 1/4 epoch); 0: off
    augment_ramp_epochs: float = -1.0  # geometric ranges rise from 0 to full over these epochs; -1: auto
    augment_ramp_start_auc: float = 0.7  # the ramp waits for an epoch with this val AUC (flips only until); 0: step 0
    checkpoint_every_secs: float = 600.0  # mid-epoch checkpoints; 0: after every loop
    reduce_lr_factor: float = 0.2
    reduce_lr_patience: int = 10
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 10
    seed: int = 42
    resume: bool = True  # continue from model_dir's checkpoint when there is one
    sync_batchnorm: str = "auto"  # auto: on when several replicas get < SMALL_REPLICA_BATCH images each | on | off
    deterministic: bool = False  # TensorFlow op determinism: bit-exact reruns and resumes on GPUs too, slower
    collective_timeout_secs: float = 0.0  # multi_worker: > 0 fails a collective stuck this long; 0: off
    export_dir: str = ""

    def validate(self):
        self.data.validate()
        self.model.validate()
        self.augment.validate()
        if self.data.image_size != self.model.image_size or self.data.channels != self.model.channels:
            raise InputError("data and model image size and channels must agree")
        choices = {"class_weight": ("balanced", "none"),
                   "strategy": ("auto", "one_device", "mirrored", "multi_worker"),
                   "precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
                   "jit_compile": ("auto", "on", "off"), "sync_batchnorm": ("auto", "on", "off")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"--{name}={getattr(self, name)} is not one of {', '.join(allowed)}")
        check_finite(learning_rate=self.learning_rate, min_learning_rate=self.min_learning_rate,
                     reduce_lr_factor=self.reduce_lr_factor, checkpoint_every_secs=self.checkpoint_every_secs,
                     collective_timeout_secs=self.collective_timeout_secs, augment_ramp_epochs=self.augment_ramp_epochs,
                     augment_ramp_start_auc=self.augment_ramp_start_auc)
        if self.epochs < 1 or self.learning_rate <= 0 or self.min_learning_rate < 0:
            raise InputError("--epochs must be at least 1, --learning_rate above 0 and --min_learning_rate "
                             "not negative")
        if not 0 < self.reduce_lr_factor < 1:
            raise InputError(f"--reduce_lr_factor={self.reduce_lr_factor} must be in (0, 1)")
        if min(self.steps_per_epoch, self.steps_per_loop, self.checkpoint_every_secs, self.precise_bn_batches,
               self.collective_timeout_secs) < 0:
            raise InputError("--steps_per_epoch, --steps_per_loop, --checkpoint_every_secs, --precise_bn_batches and "
                             "--collective_timeout_secs must not be negative")
        if self.augment_ramp_epochs != -1.0 and not 0 <= self.augment_ramp_epochs <= self.epochs:
            raise InputError(f"--augment_ramp_epochs={self.augment_ramp_epochs} must be -1 (auto) or in "
                             f"[0, --epochs={self.epochs}]")
        if not 0 <= self.augment_ramp_start_auc < 1:
            raise InputError(f"--augment_ramp_start_auc={self.augment_ramp_start_auc} must be in [0, 1); "
                             "0 starts the ramp at the first step")
        if self.augment_ramp_epochs > 0 and self.augment.impl == "chain":
            raise InputError("--augment_impl=chain (keras-cv's layers) cannot ramp its ranges; "
                             "pass --augment_ramp_epochs=0 or --augment_impl=fused")
        if self.deterministic and self.data.data_service:
            raise InputError("--deterministic cannot hold with --data_service (the service hands out shards in "
                             "arrival order); drop one of them")
        if not self.model_dir:
            raise InputError("--model_dir is required")
        return self

    def inputs(self):
        """What training reads and writes beside --export_dir, which the export may never replace."""
        return [(self.model_dir, "the run (--model_dir)"), (self.data.data_dir, "the record set (--data_dir)")]

    def batch_norm_synchronized(self, replicas):
        """Whether BatchNorm computes its moments over the global batch: `on`, or `auto` with several
        replicas that get fewer than SMALL_REPLICA_BATCH images each (noisy statistics per replica)."""
        if self.sync_batchnorm != "auto":
            return self.sync_batchnorm == "on"
        return replicas > 1 and self.data.global_batch_size // replicas < SMALL_REPLICA_BATCH

    def augment_ramp(self):
        """Epochs over which the augmentation's geometric ranges rise linearly from 0 to full.

        Auto (-1): a quarter of the epochs when the backbone starts from scratch (`--weights=none`)
        with the fused reference augmentation, else 0 (the reference: full ranges from step 0).
        From scratch, EfficientNet met the full ranges before it had found the sign and learned
        nothing (docs/design.md, "Augmentation ramp from scratch"); the same net, having learned with weak ranges, kept
        learning under full ones.  The ramp waits (flips only) for the first epoch whose validation
        AUC reaches `augment_ramp_start_auc`: a faint sign took the net longer to find than a
        fixed ramp gave it, and even a quarter of the ranges hid it.
        """
        if self.augment_ramp_epochs != -1.0:
            return self.augment_ramp_epochs
        ramped = self.model.weights == "none" and self.augment.kind == "reference" and self.augment.impl == "fused"
        return self.epochs / 4 if ramped else 0.0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`cxr_fast.evaluate`: score one split of a record set with a trained model."""

    model_dir: str
    data_dir: str
    split: str = "test"
    threshold: str = "0.5"  # a number, or auto: chosen on the val split (Youden's J or target_recall)
    target_recall: float = 0.0  # with threshold=auto: the highest threshold reaching this recall
    output_dir: str = ""  # default: {model_dir}/eval_{split}
    bootstrap: int = 1000
    batch_size: int = 64
    samples: int = 8
    overwrite: bool = False  # replace an --output_dir that is not an earlier evaluation's
    verify: bool = False  # sha256 and record count of every shard against the manifest before scoring

    def output_path(self):
        return self.output_dir or os.path.join(self.model_dir, f"eval_{self.split}")

    def inputs(self):
        """What the evaluation reads, which its output folder may never replace."""
        return [(self.model_dir, "the model being evaluated (--model_dir)"),
                (self.data_dir, "the record set (--data_dir)")]

    def validate(self):
        if self.split not in ("train", "val", "test"):
            raise InputError(f"--split={self.split} must be train, val or test")
        if self.threshold != "auto":
            try:
                value = float(self.threshold)
            except ValueError:
                raise InputError(f"--threshold={self.threshold} must be a number in (0, 1) or auto") from None
            if not 0 < value < 1:
                raise InputError(f"--threshold={self.threshold} must be in (0, 1)")
        if not 0 <= self.target_recall < 1 or (self.target_recall and self.threshold != "auto"):
            raise InputError("--target_recall must be in (0, 1) and goes with --threshold=auto")
        if self.bootstrap < 0 or self.batch_size < 1 or self.samples < 0:
            raise InputError("--bootstrap and --samples must be >= 0 and --batch_size >= 1")
        return self


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """`cxr_fast.predict`: classify image files and folders with a trained model."""

    model: str
    paths: tuple = ()  # files, and folders whose image files are read (sorted)
    gradcam_dir: str = ""  # a Grad-CAM overlay per image here; "": none
    batch_size: int = 32  # images read, decoded and scored at a time: memory stays flat
    max_image_pixels: int = DEFAULT_MAX_PIXELS

    def validate(self):
        check_range("--batch_size", self.batch_size, 1, 4096)
        check_range("--max_image_pixels", self.max_image_pixels, 1, LIMIT_CEILING)
        if not self.paths:
            raise InputError("name at least one image file or folder after the flags")
        missing = [p for p in self.paths if not os.path.exists(p)]
        if missing:
            raise InputError(f"no such file or folder: {', '.join(missing)}")
        return self


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """`cxr_fast.export`: a trained model as a SavedModel for TF Serving, with its input limits."""

    model: str
    export_dir: str
    overwrite: bool = False  # replace a non-empty export_dir (never the model's folder)
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # refused from the header, never decoded; fixed in the SavedModel
    max_image_bytes: int = DEFAULT_MAX_BYTES

    def inputs(self):
        return [(self.model, "the model (--model)")]

    def validate(self):
        check_range("--max_image_pixels", self.max_image_pixels, 1, LIMIT_CEILING)
        check_range("--max_image_bytes", self.max_image_bytes, 1, LIMIT_CEILING)
        return self


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """`cxr_fast.launch_local`: a multi-worker cluster of processes on this machine."""

    num_workers: int = 2
    module: str = "cxr_fast.train"  # what each worker runs with `python -m`
    gpus_per_worker: int = 0  # 0: the visible GPUs split evenly
    share_gpus: bool = False  # every worker sees every GPU (memory growth on)
    grace_secs: float = 10.0  # after a failure: SIGTERM, then SIGKILL this much later
    args: tuple = ()  # what every worker is given (after `--`)

    def validate(self):
        if self.num_workers < 1:
            raise InputError(f"--num_workers={self.num_workers} must be at least 1")
        check_finite(grace_secs=self.grace_secs)
        if self.grace_secs < 0 or self.gpus_per_worker < 0:
            raise InputError("--grace_secs and --gpus_per_worker must not be negative")
        return self


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """`cxr_fast.data_service`: a tf.data service dispatcher, worker, or both on this machine."""

    role: str  # dispatcher | worker | local
    port: int = 0  # 0: any free port
    dispatcher: str = ""  # worker: the dispatcher's HOST:PORT
    worker_address: str = ""  # worker: HOST:PORT trainers reach it at; "": this machine's name and port
    work_dir: str = ""  # dispatcher: its journal, so a restarted dispatcher resumes its jobs
    num_workers: int = 2  # local: workers beside the dispatcher

    def validate(self):
        if not 0 <= self.port < 65536:
            raise InputError(f"--port={self.port} must be in 0..65535")
        if self.role == "worker":
            if not self.dispatcher:
                raise InputError("--role=worker needs --dispatcher=HOST:PORT (the dispatcher's address)")
            check_service_address(self.dispatcher, "--dispatcher", scheme="")
        if self.role == "local" and self.num_workers < 1:
            raise InputError(f"--num_workers={self.num_workers} must be at least 1")
        return self
