"""The ORIGINAL PyTorch YOLACT (github.com/dbolya/yolact) end to end per image at batch 1 on this CPU, as a baseline
for benchmarks/deploy.py and benchmarks/end_to_end_cpu.py (prints numbers; asserts nothing).

Runs in a separate environment with torch (CPU), numpy and opencv-python-headless, never in the project's (no torch
there). The original checkout is patched for a CPU-only torch and its model built exactly as
``../shared/fixtures/make_reference_r50.py`` does (``import_yolact``, ``net_from_npz``: ``yolact_resnet50_config``
with the fixture's weights, eval.py's defaults: Fast NMS, no cross-class NMS). Per image, as the original's
eval.py evalimage / --benchmark: ``cv2.imread`` (not timed), preprocess (``FastBaseTransform`` on the float BGR
frame), network + Fast NMS (``net(batch)`` in eval mode, under ``torch.no_grad``), masks
(``postprocess(..., crop_masks=True, score_threshold=0)``: every detection's mask at the image's own size, then
``.cpu().numpy()``). One warm-up pass, then ``-rounds`` rounds over the photos; medians of the per-round means.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy opencv-python-headless
    git -C YOLACT_GIT archive 902073d414728280b496c5f0a59a8e8285b3c13c | tar -x -C /tmp/yolact_orig
    /tmp/torchenv/bin/python benchmarks/original_cpu.py -yolact /tmp/yolact_orig [-threads 2] [-rounds 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-yolact", required=True, help="checkout of github.com/dbolya/yolact (patched in place)")
    ap.add_argument("-shared", default=str(ROOT.parent / "shared"), help="the shared/ folder (fixtures, media)")
    ap.add_argument("-images", default=None, help="glob of photos (default: shared/data/media/*.jpg)")
    ap.add_argument("-threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("-rounds", type=int, default=3, help="timed rounds after one warm-up")
    args = ap.parse_args()
    paths = sorted(glob.glob(args.images or os.path.join(args.shared, "data", "media", "*.jpg")))
    if not paths:
        print("original_cpu.py: error: no photos match", file=sys.stderr)
        return 2
    import cv2

    sys.path.insert(0, os.path.join(args.shared, "fixtures"))
    import make_reference_r50 as ref  # the fixture generator: CPU patches, model construction

    y = ref.import_yolact(args.yolact, args.threads)
    torch, postprocess = y["torch"], y["ou"].postprocess
    net = ref.net_from_npz(np.load(os.path.join(args.shared, "fixtures", "reference_r50", "weights.npz")))
    transform = y["aug"].FastBaseTransform()
    frames = [cv2.imread(p) for p in paths]

    def one(frame):
        h, w = frame.shape[:2]
        t0 = time.perf_counter()
        with torch.no_grad():
            batch = transform(torch.from_numpy(frame).float().unsqueeze(0))
            t1 = time.perf_counter()
            dets = net(batch)
            t2 = time.perf_counter()
            classes, scores, boxes, masks = postprocess(dets, w, h, crop_masks=True, score_threshold=0)
            masks = masks.cpu().numpy()
            t3 = time.perf_counter()
        return {"preprocess": t1 - t0, "network_nms": t2 - t1, "masks": t3 - t2, "total": t3 - t0,
                "detections": int(len(scores))}

    load_before = os.getloadavg()
    for frame in frames:
        one(frame)
    rounds = []
    for _ in range(args.rounds):
        per = [one(frame) for frame in frames]
        rounds.append({k: float(np.mean([p[k] for p in per])) for k in ("preprocess", "network_nms", "masks", "total")})
    med = {k: 1000 * float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    print(json.dumps({"implementation": "original", "torch": torch.__version__, "threads": args.threads,
                      "images": len(frames), "rounds": args.rounds,
                      "ms_per_image": {k: round(v, 1) for k, v in med.items()},
                      "per_round_total_ms": [round(1000 * r["total"], 1) for r in rounds],
                      "load_before": [round(v, 2) for v in load_before],
                      "load_after": [round(v, 2) for v in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
