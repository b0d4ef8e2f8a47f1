#!/usr/bin/env bash
# The GPU check: what a GPU machine gives this project, in at most 8 minutes on one GPU. Prints tables; asserts
# nothing. Run it whenever a GPU machine is available and put the figures in docs/benchmarks.md ("GPU").
#
#   bash benchmarks/gpu_check.sh                 # needs a GPU visible to TensorFlow (exit 2 otherwise)
#   GPU_CHECK_ALLOW_CPU=1 bash benchmarks/gpu_check.sh   # dry run of the same steps on a CPU, tiny sizes
#
# Steps, each under its own `timeout` so the whole stays within 8 minutes:
#   1. the training step (benchmarks/train_step.py: forward + loss + backward + TorchSGD, batch 8) of
#      yolact_resnet50 at 550: float32, bfloat16 and float16 (loss scaling), each with TF's kernels and with XLA
#      compiling the whole step;
#   2. the detection stages (benchmarks/detection.py) of yolact_resnet50 at 550 at batch 1 and 8: network forward
#      (live and frozen), per-class Fast NMS with and without XLA next to tf.image.combined_non_max_suppression,
#      mask assembly, end to end in-process (Predictor) and through the SavedModel (images/s at batch 1 and 8).
#      The .tflite / .onnx forms run on CPU runtimes (LiteRT, onnxruntime) and are measured by benchmarks/cpu_runtimes.py.
# Environment: PYTHON (default .venv/bin/python, else python3) with requirements.txt installed; ../shared beside
# the repository (photos, the reference fixture). Output: the console and GPU_CHECK_OUT (default gpu_check_out/).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GPU_CHECK_OUT:-gpu_check_out}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} PYTHONUNBUFFERED=1

if [ "${GPU_CHECK_ALLOW_CPU:-0}" = 1 ]; then
  TRAIN=(-configs yolact_efficientnet_lite0 -img_size 128 -batch_size 2 -steps 1 -warmup 1)
  DETECT=(-reps 1 -batches 1,2 -saved_model=false)
  T_TRAIN=300 T_DETECT=300
else
  if ! timeout 120 "$PY" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)"
  then
    echo "gpu_check.sh: TensorFlow sees no GPU (GPU_CHECK_ALLOW_CPU=1 runs the same steps on a CPU)" >&2
    exit 2
  fi
  TRAIN=(-configs yolact_resnet50 -batch_size 8 -steps 5 -warmup 2)
  DETECT=(-reps 10 -batches 1,8)
  T_TRAIN=270 T_DETECT=150
fi

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader
  "$PY" -c "import tensorflow as tf, keras; print('TF', tf.__version__, 'Keras', keras.__version__, \
tf.config.list_physical_devices('GPU'))" 2>/dev/null
} | tee "$OUT/device.txt"

echo; echo "== 1/2 training step (float32 / bfloat16 / float16, XLA off / on) =="
timeout "$T_TRAIN" "$PY" benchmarks/train_step.py "${TRAIN[@]}" -precisions float32,bfloat16,float16 \
  -xla false,true 2>&1 | tee "$OUT/train_step.txt"
[ "${PIPESTATUS[0]}" = 0 ] || echo "gpu_check.sh: the training step did not finish within ${T_TRAIN} s (partial table above)"

echo; echo "== 2/2 detection: network, Fast NMS (XLA), masks, images/s at batch 1 and 8 =="
timeout "$T_DETECT" "$PY" benchmarks/detection.py "${DETECT[@]}" 2>&1 | tee "$OUT/detection.txt"
[ "${PIPESTATUS[0]}" = 0 ] || echo "gpu_check.sh: the detection benchmark did not finish within ${T_DETECT} s"
echo; echo "gpu_check.sh: done; logs in $OUT/"
