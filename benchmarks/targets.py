"""The speed targets written in docs/benchmarks.md, and the check `python -m benchmarks.run_all --check` makes.

docs/benchmarks.md's "Targets" table is the one place a target is written; each row names a figure that
`run_all` computes (`figures`), a comparison and a bound:

    | `jpeg_no_cache_img_per_s` | >= 12000 | 128 px JPEG records, no cache, all cores |

A figure below its bound, or not measured in the run, fails the check and is named.
"""
import re

_ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*(>=|<=)\s*([\d.,]+)\s*\|\s*(.*?)\s*\|\s*$")


def read(path):
    """[(figure, comparison, bound, description)] from the Targets table of a Markdown page."""
    with open(path, encoding="utf-8") as f:
        rows = [_ROW.match(line) for line in f]
    targets = [(m[1], m[2], float(m[3].replace(",", "")), m[4]) for m in rows if m]
    if not targets:
        raise ValueError(f"{path} has no targets table (rows like | `figure` | >= 12000 | what |)")
    return targets


def _variant(results, benchmark, name, cores=None):
    for v in results.get(benchmark, []):
        if v["name"] == name and (cores is None or v.get("cores") == cores):
            return v["img_per_s"]
    return None


def figures(payload, all_cores):
    """The named figures of one `run_all` payload that targets can refer to (None: not measured)."""
    results = payload["results"]
    cached = [_variant(results, "input_pipeline", f"cxr_fast {e} cache=memory", all_cores) for e in ("jpeg", "png", "raw")]
    reference = _variant(results, "input_pipeline", "reference ImageDataGenerator")
    augmented_1 = _variant(results, "input_pipeline", "cxr_fast jpeg cache=none +augment", 1)
    end_to_end = {v["name"].split(",", 1)[-1].strip(): v for v in results.get("end_to_end", [])}
    peers = [v["img_per_s"] for v in results.get("end_to_end", [])
             if "img_per_s" in v and not v["name"].startswith(("reference", "cxr_fast"))]
    mixed = {v["settings"]["cache"]: v["mixed_over_single"] for v in results.get("input_pipeline", [])
             if "mixed_over_single" in v}
    cpu = end_to_end.get("augmentation on the CPU")
    return {
        "train_records": payload.get("train_records"),
        "jpeg_no_cache_img_per_s": _variant(results, "input_pipeline", "cxr_fast jpeg cache=none", all_cores),
        "raw_no_cache_img_per_s": _variant(results, "input_pipeline", "cxr_fast raw cache=none", all_cores),
        "cached_img_per_s": None if None in cached else min(cached),
        "augmented_stream_1_core_over_reference": augmented_1 / reference if augmented_1 and reference else None,
        "fused_over_chain": payload.get("fused_speedup_over_chain"),
        "augment_share_of_step": payload.get("augment_share_of_step"),
        "host_ceiling_over_h200_b2": payload.get("loop_headroom_over_h200_b2"),
        "end_to_end_30_epochs_over_reference": cpu["speedup_over_reference"] if cpu else None,
        "cpu_stream_over_fastest_peer": _ratio(cpu["img_per_s"] if cpu else None, max(peers, default=None)),
        "mixed_over_single_cached": mixed.get("memory"),
        "mixed_over_single_records": mixed.get("none"),
    }


def _ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def number(value):
    """1,234,567 for rates, 3.24 / 0.00411 for ratios and shares."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def check(measured, targets):
    """Lines naming every target missed or not measured; empty when all are met."""
    failures = []
    for name, comparison, bound, description in targets:
        value = measured.get(name)
        if value is None:
            failures.append(f"{name} ({description}): not measured in this run")
        elif (value < bound) if comparison == ">=" else (value > bound):
            failures.append(f"{name} ({description}): {number(value)}, target {comparison} {number(bound)}")
    return failures
