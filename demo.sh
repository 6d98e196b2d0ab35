#!/usr/bin/env bash
# The embedded demo from a clean clone: install, generate synthetic chest films, convert them to
# TFRecords, train (demo.flags, CPU, weights none), evaluate, and say where the report is.
#   ./demo.sh           about 820 films of 400 patients; ~9.5 minutes on 2 cores
#   ./demo.sh --quick   a tiny run that checks the plumbing (CI runs this)
# A second run reuses what exists (images, records, a finished model).
set -euo pipefail
cd "$(dirname "$0")"
patients=400 size=64 out=demo_out extra=()
if [[ "${1:-}" == "--quick" ]]; then
  patients=40 size=32 out=demo_out_quick extra=(--image_size=32 --epochs=2 --steps_per_epoch=3 --batch_size=8)
fi
if [[ -z "${VIRTUAL_ENV:-}" ]]; then
  [[ -d .venv ]] || python3 -m venv .venv
  source .venv/bin/activate
fi
python -c "import cxr_fast, tensorflow, keras_cv" 2>/dev/null || pip install --quiet -e ".[cpu]"
export TF_CPP_MIN_LOG_LEVEL=2
echo "== 1/4 synthetic chest films ($patients patients) -> $out/images"
[[ -f "$out/images/synthetic.json" ]] || \
  python -m tools.make_synthetic --output_dir="$out/images" --num_patients="$patients" --difficulty=0.2
echo "== 2/4 TFRecords (${size} px, patient split) -> $out/records"
[[ -f "$out/records/manifest.json" ]] || \
  python -m tools.make_tfrecords --data_dir="$out/images" --output_dir="$out/records" --image_size="$size" \
    --min_shards=4  # four shards per split: enough for tools.launch_local with up to 4 workers
echo "== 3/4 training (demo.flags) -> $out/model"
python -m cxr_fast.train --flagfile=demo.flags --data_dir="$out/records" --model_dir="$out/model" ${extra[@]+"${extra[@]}"}
echo "== 4/4 evaluation on the test split"
python -m cxr_fast.evaluate --model_dir="$out/model" --data_dir="$out/records" --threshold=auto
echo
echo "report:      $out/model/eval_test/report.html (and report.md)"
echo "plots:       $out/model/eval_test/*.png"
echo "predictions: $out/model/eval_test/predictions.csv"
echo "model:       $out/model/model.keras"
echo "next:        python -m cxr_fast.predict --model=$out/model $out/images/chest_xray/test/PNEUMONIA --gradcam_dir=$out/gradcam"
