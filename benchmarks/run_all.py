"""Every benchmark in one run: one JSON, bar charts (log scale, reference marked), a markdown table,
and the check of the targets in docs/benchmarks.md.

    python -m benchmarks.run_all --output_dir=bench_out --check [--data_root=chest_xray] [--measured_md=docs/benchmarks.md]
    python -m benchmarks.run_all --output_dir=/tmp/smoke --quick     # does every part run here? (~2 min)

`--data_root` is a Kermany-layout folder (train/, val/, test/ of full-size films); without it a
Kermany-sized synthetic set is generated first (3,300 patients: ~6,800 films, ~5,600 in train/,
so the record sets hold >= 3,500 training records and caches and shuffle buffers behave as on
the real set).  `--check` exits 1 naming every target in docs/benchmarks.md's Targets table that this run
missed; `--measured_md` rewrites that page's measured section (between its markers) from this run.
"""
import contextlib
import io
import os
import shlex
import sys
import time

from absl import flags

from benchmarks import augment, common, convert, end_to_end, input_pipeline, targets, train_step
from cxr_fast import atomic, entry
from cxr_fast.config import SyntheticConfig
from cxr_fast.data import recordset, synthetic
from cxr_fast.errors import InputError


def chart(variants, path, title):
    """Horizontal bars of img/s on a log axis; the reference pipeline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in variants if "img_per_s" in v]  # a peer not measured here has no bar
    names = [v["name"] + (f" ({v['cores']} core{'s' if v['cores'] > 1 else ''})" if v.get("cores") else "")
             for v in variants]
    rates = [v["img_per_s"] for v in variants]
    colours = ["#c0392b" if v["name"].startswith("reference") else "#2e86c1" for v in variants]
    figure, ax = plt.subplots(figsize=(10, 0.45 * len(variants) + 1.5))
    ax.barh(range(len(variants)), rates, color=colours)
    ax.set_yticks(range(len(variants)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(rates) * 5)  # room for the labels
    ax.set_xlabel("images per second (log scale)")
    ax.set_title(title)
    for i, rate in enumerate(rates):
        ax.text(rate, i, f" {rate:,.0f}", va="center", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic.write_bytes(path, buffer.getvalue())
    return path


MARKERS = ("<!-- measured by benchmarks.run_all: begin -->", "<!-- measured by benchmarks.run_all: end -->")


def markdown(results):
    lines = ["| benchmark | variant | cores | reads | augmentation | img/s | x reference |",
             "|---|---|---|---|---|---|---|"]
    for name, variants in results.items():
        if name == "end_to_end":
            continue
        for v in variants:
            ratio, settings = v.get("ratio_to_reference"), v.get("settings", {})
            lines.append(f"| {name} | {v['name']} | {v.get('cores', '')} | {settings.get('reads', '')} | "
                         f"{settings.get('augment', '')} | {v['img_per_s']:,.1f} | "
                         f"{'' if ratio is None else f'{ratio:,.1f}'} |")
    return "\n".join(lines) + "\n"


def _minutes(part_seconds):
    parts = ", ".join(f"{name} {seconds / 60:,.1f}" for name, seconds in part_seconds.items())
    return f"{sum(part_seconds.values()) / 60:,.1f} min ({parts})"


def report(payload, command):
    """The measured section: command, machine and date, then every table of the run."""
    machine = payload["machine"]
    figures = "\n".join(f"| `{name}` | {'' if value is None else targets.number(value)} |"
                        for name, value in payload["figures"].items())
    return (f"Command: `{command}`; machine: {machine['cores']} cores ({machine['processor']}), "
            f"{machine['gpus']} GPUs, TensorFlow {machine['tensorflow']}, Python {machine['python']}; "
            f"date {machine['date']}; {payload['train_records']:,} training records of 128 px behind every "
            f"cached and uncached row; the run took {_minutes(payload['part_seconds'])}.\n\n"
            f"Time to a trained model, input side (docs/benchmarks.md, \"Like for like\"):\n\n"
            f"{end_to_end.markdown(payload['results']['end_to_end'], payload['epochs'])}\n"
            f"Every variant:\n\n{markdown(payload['results'])}\n"
            f"Figures the targets refer to:\n\n| figure | measured |\n|---|---|\n{figures}\n")


def write_measured_md(path, section):
    """Replaces the text between the page's two markers with `section` (written to a temporary name first)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    begin, end = (text.find(marker) for marker in MARKERS)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} lacks the markers {MARKERS[0]} ... {MARKERS[1]}")
    atomic.write_text(path, text[:begin + len(MARKERS[0])] + "\n" + section + text[end:])


@contextlib.contextmanager
def _timed(name, part_seconds, log):
    """Records the wall seconds of the block as `part_seconds[name]` and logs them."""
    start = time.perf_counter()
    yield
    part_seconds[name] = time.perf_counter() - start
    log(f"{name}: done in {part_seconds[name]:,.0f} s")


def run(output_dir, data_root=None, seconds=5.0, num_patients=3300, backbone="B2", image_size=128, batch=64,
        log=print, encodings=("jpeg", "png", "raw"), film_sizes=(900, 2000), epochs=end_to_end.EPOCHS,
        batches_per_call=common.GPU_STEPS_PER_LOOP, convert_films=convert.FILMS, overhead=(256, 50)):
    os.makedirs(output_dir, exist_ok=True)
    if not data_root:
        images = os.path.join(output_dir, "synthetic")
        if not os.path.isfile(os.path.join(images, "synthetic.json")):
            synthetic.generate(SyntheticConfig(output_dir=images, num_patients=num_patients, min_size=film_sizes[0],
                                               max_size=film_sizes[1]), log=log)
        data_root = os.path.join(images, "chest_xray")
    image_dir = os.path.join(data_root, "train")
    records = os.path.join(output_dir, "records")
    results, part_seconds = {}, {}
    with _timed("input_pipeline", part_seconds, log):
        results["input_pipeline"] = input_pipeline.run(image_dir, records, seconds, encodings=encodings, log=log,
                                                       batches_per_call=batches_per_call)
    with _timed("train_step", part_seconds, log):
        step = train_step.run(os.path.join(records, "jpeg"), seconds, backbone, image_size, batch, log=log,
                              overhead_batch=overhead[0], overhead_steps_per_loop=overhead[1])
        results["train_step"] = step["variants"]
    with _timed("augment", part_seconds, log):  # its shares are of the step just measured
        augment_result = augment.run(seconds, batch, image_size, backbone, log=log, step_rate=step["step_img_per_s"])
        results["augment"] = augment_result["variants"]
    with _timed("convert", part_seconds, log):
        results["convert"] = convert.run(image_dir, image_size, log=log, films=convert_films)
    with _timed("end_to_end", part_seconds, log):
        results["end_to_end"] = end_to_end.run(data_root, epochs, work_dir=output_dir, log=log)
    payload = {"machine": common.machine(), "results": results, "epochs": epochs,
               "train_records": recordset.open_record_set(os.path.join(records, "jpeg")).num_records("train"),
               "augment_share_of_step": augment_result["fused_share_of_step"],
               "fused_speedup_over_chain": augment_result["fused_speedup_over_chain"],
               "loop_headroom_over_h200_b2": step["loop_headroom_over_h200_b2"], "part_seconds": part_seconds}
    payload["figures"] = targets.figures(payload, payload["machine"]["cores"])
    common.write_json(os.path.join(output_dir, "benchmarks.json"), payload)
    for name, variants in results.items():
        chart(variants, os.path.join(output_dir, f"{name}.png"), f"{name.replace('_', ' ')}: images/s "
              f"({payload['machine']['cores']} cores, {payload['machine']['gpus']} GPUs)")
    atomic.write_text(os.path.join(output_dir, "benchmarks.md"), markdown(results))
    return payload


def finish(payload, command, output_dir, measured_md=None, targets_file=None, log=print):
    """Writes report.md (and the measured section of `measured_md`); returns the exit code of `--check`:
    1 when a figure misses its target in `targets_file` (each named), else 0."""
    section = report(payload, command)
    atomic.write_text(os.path.join(output_dir, "report.md"), section)
    log(section)
    log(f"charts, benchmarks.json and report.md in {output_dir}")
    if measured_md:
        write_measured_md(measured_md, section)
        log(f"{measured_md}: measured section rewritten from this run")
    if not targets_file:
        return 0
    failures = targets.check(payload["figures"], targets.read(targets_file))
    for line in failures:
        log(f"TARGET MISSED: {line}")
    if not failures:
        log(f"every target in {targets_file} met")
    return 1 if failures else 0


# `--quick`: every benchmark and peer on a 20-patient set of small films, tiny windows and model, JPEG
# only, 2 epochs: that the whole run works here (the suite runs it), not how fast anything is.
QUICK = dict(seconds=0.1, num_patients=20, backbone="tiny", image_size=32, batch=8, film_sizes=(96, 160),
             encodings=("jpeg",), epochs=2, batches_per_call=2, convert_films=12, overhead=(16, 5))


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.quick and (FLAGS.check or FLAGS.measured_md or FLAGS.data_root):
        raise InputError("--quick measures nothing worth checking or writing down; drop --check, --measured_md "
                         "and --data_root, or run without --quick")
    if FLAGS.quick:
        payload = run(FLAGS.output_dir, **QUICK)
    else:
        payload = run(FLAGS.output_dir, FLAGS.data_root, FLAGS.seconds, FLAGS.num_patients, FLAGS.backbone,
                      FLAGS.image_size, FLAGS.batch_size, epochs=FLAGS.epochs)
    command = "python -m benchmarks.run_all " + shlex.join(sys.argv[1:])
    sys.exit(finish(payload, command, FLAGS.output_dir, FLAGS.measured_md, FLAGS.targets if FLAGS.check else None))


if __name__ == "__main__":
    flags.DEFINE_string("output_dir", None, "Folder for benchmarks.json, the charts, benchmarks.md and report.md.")
    flags.DEFINE_string("data_root", None, "Kermany-layout folder (train/, val/, test/ of full-size films); "
                        "default: a Kermany-sized synthetic set.")
    flags.DEFINE_float("seconds", 5.0, "Measuring window per variant (twice this for the train step).")
    flags.DEFINE_integer("num_patients", 3300, "Size of the synthetic set when no --data_root is given.")
    flags.DEFINE_string("backbone", "B2", "EfficientNet of the augmentation and train-step benchmarks.")
    flags.DEFINE_integer("image_size", 128, "Image size.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_integer("epochs", end_to_end.EPOCHS, "Epochs of the end-to-end input-side time.")
    flags.DEFINE_bool("quick", False, "A smoke run of ~2 minutes (QUICK): every part and peer on a tiny "
                      "synthetic set; its figures mean nothing.")
    flags.DEFINE_bool("check", False, "Exit 1, naming each, when a figure misses its target in --targets.")
    flags.DEFINE_string("targets", "docs/benchmarks.md", "The file whose Targets table --check reads.")
    flags.DEFINE_string("measured_md", None, "Rewrite this page's measured section (docs/benchmarks.md) from the run.")
    flags.mark_flags_as_required(["output_dir"])
    entry.run_main(main)
