"""Frozen configuration dataclasses, one per kind of run.

Entry points validate their flags and build one of these; library functions take the config
and never read flags, so tests build configs directly.  `validate()` raises InputError naming
the flag, so a bad value is reported before any work starts.
"""
import dataclasses
import os

from cxr_fast.dataset_index import SPLIT_POLICIES
from cxr_fast.errors import InputError
from cxr_fast.imaging import DEFAULT_MAX_PIXELS, ENCODINGS


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
    num_workers: int = 0  # 0: all cores
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False

    def validate(self):
        if not os.path.isdir(self.data_dir):
            raise InputError(f"--data_dir={self.data_dir} is not a folder; point it at the chest X-ray images")
        if self.split not in SPLIT_POLICIES:
            raise InputError(f"--split={self.split} is not one of {', '.join(SPLIT_POLICIES)}")
        fractions = self.split_fractions
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise InputError(f"--split_fractions={','.join(map(str, fractions))} must be three non-negative "
                             "numbers (train,val,test) that sum to 1")
        if fractions[0] <= 0 or fractions[1] <= 0:
            raise InputError("--split_fractions needs a train and a val fraction above 0")
        if self.image_size < 0 or 0 < self.image_size < 8:
            raise InputError(f"--image_size={self.image_size}: use 0 (full resolution) or at least 8 pixels")
        if self.encoding not in ENCODINGS:
            raise InputError(f"--encoding={self.encoding} is not one of {', '.join(ENCODINGS)}")
        if self.encoding == "raw" and self.image_size == 0:
            raise InputError("--encoding=raw needs a fixed --image_size (images of full resolution differ in size)")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"--jpeg_quality={self.jpeg_quality} must be in 1..100")
        if self.shard_size_mb <= 0:
            raise InputError(f"--shard_size_mb={self.shard_size_mb} must be above 0")
        if self.num_workers < 0:
            raise InputError(f"--num_workers={self.num_workers} must be 0 (all cores) or more")
        if self.max_image_pixels < 1:
            raise InputError(f"--max_image_pixels={self.max_image_pixels} must be at least 1")
        out, data = os.path.abspath(self.output_dir), os.path.abspath(self.data_dir)
        if out == data or out.startswith(data + os.sep):
            raise InputError(f"--output_dir={self.output_dir} lies inside --data_dir; write the records elsewhere")
        return self


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
    num_workers: int = 0
    overwrite: bool = False

    def validate(self):
        if self.num_patients < 4:
            raise InputError(f"--num_patients={self.num_patients}: need at least 4 (both classes, train and test)")
        if not 0.0 <= self.difficulty <= 1.0:
            raise InputError(f"--difficulty={self.difficulty} must be in [0, 1]")
        if not 32 <= self.min_size <= self.max_size:
            raise InputError(f"--size_range={self.min_size},{self.max_size}: need 32 <= min <= max")
        if self.num_workers < 0:
            raise InputError(f"--num_workers={self.num_workers} must be 0 (all cores) or more")
        return self
