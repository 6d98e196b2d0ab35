"""Every benchmark in one run: one JSON, bar charts (log scale, reference marked) and a markdown table.

    python -m benchmarks.run_all --output_dir=bench_out [--image_dir=chest_xray/train]

Without --image_dir a synthetic set of full-size films is generated first, so the suite runs
anywhere.  The markdown table is what the README's performance section shows.
"""
import io
import os

from absl import app, flags

from benchmarks import augment, common, convert, input_pipeline, train_step
from cxr_fast import atomic
from cxr_fast.config import SyntheticConfig
from cxr_fast.data import synthetic


def chart(variants, path, title):
    """Horizontal bars of img/s on a log axis; the reference pipeline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def markdown(results):
    lines = ["| benchmark | variant | cores | img/s | x reference |", "|---|---|---|---|---|"]
    for name, variants in results.items():
        for v in variants:
            ratio = v.get("ratio_to_reference")
            lines.append(f"| {name} | {v['name']} | {v.get('cores', '')} | {v['img_per_s']:,.1f} | "
                         f"{'' if ratio is None else f'{ratio:,.1f}'} |")
    return "\n".join(lines) + "\n"


def run(output_dir, image_dir=None, seconds=5.0, num_patients=300, backbone="B2", image_size=128, batch=64,
        log=print, encodings=("jpeg", "png", "raw"), film_sizes=(900, 2000)):
    os.makedirs(output_dir, exist_ok=True)
    if not image_dir:
        images = os.path.join(output_dir, "synthetic")
        if not os.path.isfile(os.path.join(images, "synthetic.json")):
            synthetic.generate(SyntheticConfig(output_dir=images, num_patients=num_patients, min_size=film_sizes[0],
                                               max_size=film_sizes[1]), log=log)
        image_dir = os.path.join(images, "chest_xray", "train")
    records = os.path.join(output_dir, "records")
    results = {"input_pipeline": input_pipeline.run(image_dir, records, seconds, encodings=encodings, log=log)}
    augment_result = augment.run(seconds, batch, image_size, backbone, log=log)
    results["augment"] = augment_result["variants"]
    step = train_step.run(os.path.join(records, "jpeg"), seconds * 2, backbone, image_size, batch, log=log)
    results["train_step"] = step["variants"]
    results["convert"] = convert.run(image_dir, image_size, log=log)
    payload = {"machine": common.machine(), "results": results,
               "augment_share_of_step": augment_result["fused_share_of_step"],
               "fused_speedup_over_chain": augment_result["fused_speedup_over_chain"],
               "loop_headroom_over_h200_b2": step["loop_headroom_over_h200_b2"]}
    common.write_json(os.path.join(output_dir, "benchmarks.json"), payload)
    for name, variants in results.items():
        chart(variants, os.path.join(output_dir, f"{name}.png"), f"{name.replace('_', ' ')}: images/s "
              f"({payload['machine']['cores']} cores, {payload['machine']['gpus']} GPUs)")
    atomic.write_text(os.path.join(output_dir, "benchmarks.md"), markdown(results))
    return payload


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    run(FLAGS.output_dir, FLAGS.image_dir, FLAGS.seconds, FLAGS.num_patients, FLAGS.backbone, FLAGS.image_size,
        FLAGS.batch_size)
    print(open(os.path.join(FLAGS.output_dir, "benchmarks.md")).read())
    print(f"charts and benchmarks.json in {FLAGS.output_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("output_dir", None, "Folder for benchmarks.json, the charts and benchmarks.md.")
    flags.DEFINE_string("image_dir", None, "Full-size images (NORMAL/ and PNEUMONIA/); default: a synthetic set.")
    flags.DEFINE_float("seconds", 5.0, "Measuring window per variant (twice this for the train step).")
    flags.DEFINE_integer("num_patients", 300, "Size of the synthetic set when no --image_dir is given.")
    flags.DEFINE_string("backbone", "B2", "EfficientNet of the augmentation and train-step benchmarks.")
    flags.DEFINE_integer("image_size", 128, "Image size.")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.mark_flags_as_required(["output_dir"])
    app.run(main)
