"""Several record sets read as one: findings aligned, each set's labels placed in the union, the
sets mixed by weight.  Checked without TensorFlow, as `recordset` is.

    python -m cxr_fast.train --data_dir=records/nih256,records/chexpert256,records/rsna256

`open_records` gives the RecordSet itself for one folder without --findings (its own task, as
written), else a RecordMix:
- findings: the union of the sets' aligned findings (`cxr_fast.tasks.vocabulary`) in order of
  first appearance, or those named by --findings;
- `columns[s][k]`: where set s keeps finding k among its label sources (0: a binary set's LABEL,
  its positive class's finding; 1 + j: a multi-label set's FINDINGS[j]); -1 when set s does not
  label finding k, so its films carry label -1 there: masked out of the loss and the metrics,
  never counted as negative;
- weights per set: `proportional` (each set's share of the training records: an epoch is one
  pass over every set), `equal`, or W1,W2,... (normalized); the pipeline draws the sets from a
  stream that is a pure function of (seed, epoch), so resume stays exact;
- `finding_counts`: positives and negatives per finding in the mixed stream of one epoch, which
  the class weights come from.
Each set keeps its own split; patients stay namespaced by set (`set_name`).
"""
import dataclasses
import os

from cxr_fast.data import recordset
from cxr_fast.errors import InputError
from cxr_fast.tasks import task as task_lib
from cxr_fast.tasks import vocabulary


@dataclasses.dataclass(frozen=True)
class RecordMix:
    """Record sets trained on as one, their labels in one aligned vocabulary."""

    sets: tuple  # RecordSets
    findings: tuple  # aligned names: the model's outputs
    columns: tuple  # per set, per finding: the set's label source column, or -1
    weights: tuple  # per set, summing to 1
    proportional: bool = True  # weights from the sets' sizes: every film once per epoch
    classes = task_lib.ANY_FINDING

    @property
    def root(self):
        return ",".join(s.root for s in self.sets)

    @property
    def stored_size(self):
        return self.sets[0].stored_size

    @property
    def encoding(self):
        return self.sets[0].encoding

    @property
    def files(self):
        """split -> every set's shard files, for the splits all the sets hold."""
        splits = set.intersection(*(set(s.files) for s in self.sets))
        return {split: sum((s.files[split] for s in self.sets), ()) for split in splits}

    def describe(self):
        shares = ", ".join(f"{self.set_name(i)} {w:.0%}" for i, w in enumerate(self.weights))
        return (f"{len(self.sets)} record sets trained as one ({shares} of the draws"
                f"{', every film once per epoch' if self.proportional else ''}); findings a set does not label "
                "are masked out of its films' loss and metrics")

    def set_name(self, index):
        """The name patients and messages of set `index` go by: its folder's name."""
        return os.path.basename(os.path.normpath(self.sets[index].root))

    def num_records(self, split):
        return sum(s.num_records(split) for s in self.sets if split in s.files)

    def check_batch_size(self, global_batch_size):
        if global_batch_size > self.num_records("train"):
            raise InputError(f"--batch_size={global_batch_size} is larger than the {self.num_records('train')} "
                             "training records of the sets together; lower it")

    def draws(self, split="train"):
        """Films drawn from each set in one epoch of the mixed stream (fractional for weighted mixes)."""
        total = self.num_records(split)
        return [w * total for w in self.weights]

    def finding_counts(self, split):
        """[(positive, negative)] per finding in one epoch of the mixed stream; labels a set does not
        give, and ignored ones, are left out."""
        counts = [[0.0, 0.0] for _ in self.findings]
        for record_set, columns, draws in zip(self.sets, self.columns, self.draws(split)):
            own = task_lib.for_record_set(record_set).output_counts(record_set, split)
            scale = draws / max(record_set.num_records(split), 1)
            for k, column in enumerate(columns):
                if column >= 0:
                    counts[k][0] += scale * own[column][0]
                    counts[k][1] += scale * own[column][1]
        return [tuple(c) for c in counts]


def open_records(data_dir, verify=False, selected=(), mix="proportional"):
    """`--data_dir` (one folder, or several joined by commas) as the RecordSet or a RecordMix;
    `selected`: the findings to train on (--findings), () for all the sets label."""
    dirs = [d for d in data_dir.split(",") if d]
    if len(dirs) == 1 and not selected:
        return recordset.open_record_set(dirs[0], verify)
    if len(set(map(os.path.abspath, dirs))) < len(dirs):
        raise InputError(f"--data_dir={data_dir} names a record set twice")
    sets = tuple(recordset.open_record_set(d, verify) for d in dirs)
    for other in sets[1:]:
        if (other.stored_size, other.encoding) != (sets[0].stored_size, sets[0].encoding):
            raise InputError(f"--data_dir: {other.root} holds {other.stored_size[0]} px {other.encoding} records, "
                             f"{sets[0].root} {sets[0].stored_size[0]} px {sets[0].encoding}; write them again with "
                             "the same --image_size and --encoding")
    names = [task_lib.for_record_set(s).output_names() for s in sets]
    union = tuple(dict.fromkeys(n for own in names for n in own))
    chosen = _chosen_findings(selected, union)
    columns = tuple(tuple(own.index(f) if f in own else -1 for f in chosen) for own in names)
    for record_set, own in zip(sets, columns):
        if max(own) < 0:
            raise InputError(f"--data_dir: {record_set.root} labels none of the findings trained on "
                             f"({', '.join(chosen)}); drop it or name its findings in --findings")
    return RecordMix(sets, chosen, columns, mix_weights(mix, sets), mix == "proportional")


def _chosen_findings(selected, union):
    chosen = tuple(vocabulary.align(f) for f in selected) or union
    unknown = [f for f in chosen if f not in union]
    if unknown:
        raise InputError(f"--findings: {', '.join(unknown)} is labelled by none of the sets; they label "
                         f"{', '.join(union)}")
    return chosen


def mix_weights(mix, sets):
    """Per set sampling weights, summing to 1, from --mix."""
    if mix == "proportional":
        raw = [s.num_records("train") for s in sets]
    elif mix == "equal":
        raw = [1.0] * len(sets)
    else:
        raw = [float(w) for w in mix.split(",")]
        if len(raw) != len(sets):
            raise InputError(f"--mix={mix} gives {len(raw)} weights for {len(sets)} record sets; give one per set")
    return tuple(w / sum(raw) for w in raw)
