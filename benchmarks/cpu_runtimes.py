"""CPU runtimes side by side, end to end per photo, and where the time goes inside them (prints; asserts nothing).

Variants (the whole pipeline of inference.py per photo: the float resize, the form's graph, the host step that
upsamples the masks to the photo; JPEG decoding not timed), interleaved round by round after one warm-up pass: in
each round every variant runs over all the photos in turn, so load from other processes hits each variant about
equally while each model runs warm, as in an application. (Interleaved photo by photo instead, another
interpreter's thread pool and memory come between every two invokes of a model: measured on the int8 graphs alone,
yolact_resnet50 99.5 vs 97.6 ms per invoke, yolact_plus_resnet50 196.9 vs 178.9 ms.)

  inproc_float32    the Predictor of -checkpoint (frozen graph, XLA Fast NMS)
  inproc_bfloat16   the same under Keras' mixed_bfloat16 policy (inference.py -precision bfloat16)
  saved_model       EXPORT_DIR's SavedModel (serving_default)
  tflite_float32    EXPORT_DIR/yolact_float32.tflite on LiteRT (XNNPACK)
  tflite_float16    EXPORT_DIR/yolact_float16.tflite
  tflite_int8       EXPORT_DIR/yolact_int8.tflite
  onnx              EXPORT_DIR/yolact.onnx on onnxruntime
  openvino_float32  EXPORT_DIR/yolact_openvino.xml (export_saved_model.py -openvino) on OpenVINO's CPU plugin
  openvino_bfloat16 the same IR with OpenVINO's bfloat16 arithmetic (what it picks by itself on AMX / AVX512-BF16)
  openvino_int8     -openvino_int8 IR (benchmarks/openvino_int8.py: NNCF post-training quantization)
  PATH              any exported model (.tflite / .onnx / .xml file or SavedModel folder, config.json beside it):
                    e.g. the int8 models of yolact_resnet50 and yolact_plus_resnet50, or of one model at several
                    input sizes (square and rectangular: the input size is printed), in one run;
                    PATH.xml:bfloat16 runs an OpenVINO IR with bfloat16 arithmetic (as openvino_bfloat16)

Every runtime gets -num_threads threads (the Predictor: TensorFlow's default pools, i.e. all cores). Printed: ms
per photo (mean), its stages, the ratio to the first variant, detections above 0.3 per photo (a sanity check of the
int8 models), and the 1-minute load average before and after.

``-agreement`` matches, on the warm-up pass, each variant's detections to the first variant's (the same model:
e.g. ``inproc_float32`` first, then its int8 exports): mean box IoU and score differences.

``-profile`` adds, for the int8 TFLite model: its ops by kind (int8 / float / (de)quantize, network vs detection
stage), and the time of the network alone (the model cut before the detection stage) next to the whole graph, and
for a YOLACT++ model the time of each DCNv2 layer (the graph cut before and after it); for each OpenVINO variant, OpenVINO's per-node profile summed by node type (share of the graph's time).

    python benchmarks/cpu_runtimes.py -checkpoint quickstart_out/weights/sample -export_dir exports/quickstart
    python benchmarks/cpu_runtimes.py -checkpoint R50/r50.weights.h5 -export_dir R50_EXPORT \\
        -variants tflite_int8,openvino_int8,openvino_float32,onnx -openvino_int8 R50_OV/yolact_openvino_int8.xml -profile
"""

from __future__ import annotations

import collections
import glob
import os
import pathlib
import sys
import time

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.cli import UserError, run  # noqa: E402
from utils.flags_util import define_model_flags  # noqa: E402

FLAGS = flags.FLAGS
define_model_flags()
flags.DEFINE_string("export_dir", None, "export of export_saved_model.py -tflite float32,int8 -onnx -openvino")
flags.DEFINE_string("openvino_int8", None, "int8 OpenVINO IR (benchmarks/openvino_int8.py); config.json beside it")
flags.DEFINE_string("images", str(ROOT.parent / "shared" / "data" / "media" / "*.jpg"), "glob of photos")
flags.DEFINE_list("variants", ["inproc_float32", "tflite_float32", "tflite_int8", "onnx", "openvino_float32"],
                  "variants to time (module docstring)")
flags.DEFINE_integer("rounds", 3, "timed rounds over all photos (after one warm-up pass)")
flags.DEFINE_integer("num_threads", 2, "LiteRT / onnxruntime / OpenVINO threads")
flags.DEFINE_boolean("agreement", False, "also match each variant's detections to the first variant's (same model): "
                     "each first-variant detection > 0.3 to the detection of its class with the best box IoU")
flags.DEFINE_boolean("profile", False, "also print the int8 op census / network-only time and OpenVINO profiles")

DETECTION_SCOPE = "detection_generator"


def _bf16_file(variant):
    """``PATH.xml:bfloat16`` -> PATH.xml (an OpenVINO IR file run with bfloat16 arithmetic), else None."""
    path, _, precision = variant.rpartition(":")
    return path if precision == "bfloat16" and path.endswith(".xml") and os.path.isfile(path) else None


def _is_file_variant(variant):
    return os.path.exists(variant) or _bf16_file(variant) is not None


def _path(variant):
    if os.path.exists(variant):
        return variant
    bf16 = _bf16_file(variant)
    if bf16:
        return bf16
    if variant == "saved_model":
        return FLAGS.export_dir
    files = {"tflite_float32": "yolact_float32.tflite", "tflite_float16": "yolact_float16.tflite",
             "tflite_int8": "yolact_int8.tflite", "onnx": "yolact.onnx",
             "openvino_float32": "yolact_openvino.xml", "openvino_bfloat16": "yolact_openvino.xml"}
    if variant == "openvino_int8":
        if not FLAGS.openvino_int8:
            raise UserError("openvino_int8 needs -openvino_int8 IR.xml")
        return FLAGS.openvino_int8
    if variant not in files:
        raise UserError(f"unknown variant {variant!r}")
    return os.path.join(FLAGS.export_dir, files[variant])


def build(variant):
    from yolact.checkpoint import resolve_run
    from yolact.predictor import Predictor
    from yolact.runtimes import open_model

    if variant in ("inproc_float32", "inproc_bfloat16"):
        if not FLAGS.checkpoint:
            raise UserError(f"{variant} needs -checkpoint")
        return Predictor.from_checkpoint(FLAGS.checkpoint, FLAGS.config, FLAGS.img_size, FLAGS.label_map,
                                         precision=variant.split("_", 1)[1], freeze=True)
    path = _path(variant)
    cfg, label_map, _ = resolve_run(path)
    if os.path.exists(variant):
        return open_model(path, cfg, label_map, FLAGS.num_threads)
    if variant == "openvino_bfloat16" or _bf16_file(variant):  # the float32 IR, bfloat16 arithmetic (-precision)
        return open_model(path, cfg, label_map, FLAGS.num_threads, precision="bfloat16")
    return open_model(path, cfg, label_map, FLAGS.num_threads)


def _compile_openvino(path, **config):
    import openvino as ov

    from yolact.deploy.openvino import COMPILE_CONFIG

    return ov.Core().compile_model(path, "CPU", dict(COMPILE_CONFIG, INFERENCE_NUM_THREADS=FLAGS.num_threads,
                                                     **config))


def tflite_census(content: bytes):
    """Counter of (part, op, output dtype) of a .tflite: part 'network' or 'detection' (output tensor named under
    the detection stage's scope)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    out = collections.Counter()
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        tensor = graph.tensors[op.outputs[0]]
        part = "detection" if DETECTION_SCOPE in tensor.name.decode() else "network"
        out[(part, ops[max(code.builtinCode, code.deprecatedBuiltinCode)], types[tensor.type])] += 1
    return out


def network_only(content: bytes) -> bytes:
    """The .tflite cut before the detection stage: outputs = the network tensors the detection stage reads, only
    the ops they need (signatures dropped)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    is_det = [DETECTION_SCOPE in graph.tensors[op.outputs[0]].name.decode() for op in graph.operators]
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs}
    targets = {t for i, op in enumerate(graph.operators) if is_det[i] for t in op.inputs
               if t in producer and not is_det[producer[t]]}
    need, stack = set(), [producer[t] for t in targets]
    while stack:
        i = stack.pop()
        if i not in need:
            need.add(i)
            stack += [producer[t] for t in graph.operators[i].inputs if t in producer]
    graph.operators = [op for i, op in enumerate(graph.operators) if i in need]
    graph.outputs = sorted(targets)
    model.signatureDefs = []
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def profile_tflite_int8(path, inputs):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    content = pathlib.Path(path).read_bytes()
    census = tflite_census(content)
    print(f"\n{path}: {sum(census.values())} ops")
    for part in ("network", "detection"):
        rows = {k[1:]: v for k, v in census.items() if k[0] == part}
        int8 = sum(v for (op, dt), v in rows.items() if dt == "INT8" and op not in ("QUANTIZE", "DEQUANTIZE"))
        qdq = {f"{op}->{dt}": v for (op, dt), v in rows.items() if op in ("QUANTIZE", "DEQUANTIZE")}
        other = {f"{op}:{dt}": v for (op, dt), v in rows.items()
                 if dt != "INT8" and op not in ("QUANTIZE", "DEQUANTIZE")}
        print(f"  {part}: {sum(rows.values())} ops, {int8} int8; (de)quantize {qdq}; not int8 {other}")
    times = {}
    for name, model in (("whole graph", content), ("network only", network_only(content))):
        # each model on its own, warm (one interpreter at a time: see the module docstring on interleaving)
        it = Interpreter(model_content=model, num_threads=FLAGS.num_threads)
        it.allocate_tensors()
        times[name] = []
        for r in range(FLAGS.rounds + 1):
            for x in inputs:
                it.set_tensor(it.get_input_details()[0]["index"], x)
                t0 = time.perf_counter()
                it.invoke()
                if r:
                    times[name].append(time.perf_counter() - t0)
        del it
    whole, net = (1000 * float(np.median(times[k])) for k in ("whole graph", "network only"))
    print(f"  invoke median: whole graph {whole:.1f} ms, network only {net:.1f} ms, detection stage "
          f"{whole - net:.1f} ms ({100 * (whole - net) / whole:.0f} %)")
    blocks = dcn_blocks(content)
    if blocks:
        profile_dcn_blocks(content, blocks, inputs[0])


def match_detections(ref, res, threshold):
    """[(box IoU, |score difference|, |mask score difference|)] of each ``ref`` detection with score > ``threshold``
    and the ``res`` detection of its class with the best IoU (pixel ``[x1, y1, x2, y2]`` boxes; (0, 1, 1) when
    ``res`` has none of that class; mask scores only for YOLACT++, else 0)."""
    import numpy as np

    out = []
    for i in np.nonzero(ref["scores"] > threshold)[0]:
        same = np.nonzero(res["category_ids"] == ref["category_ids"][i])[0]
        if not len(same):
            out.append((0.0, 1.0, 1.0))
            continue
        box, boxes = np.asarray(ref["boxes"][i], float), np.asarray(res["boxes"][same], float)
        wh = np.clip(np.minimum(box[2:], boxes[:, 2:]) - np.maximum(box[:2], boxes[:, :2]), 0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = ((box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                 - inter)
        ious = inter / np.maximum(union, 1e-9)
        k = same[int(np.argmax(ious))]
        mask = abs(res["mask_scores"][k] - ref["mask_scores"][i]) if "mask_scores" in ref else 0.0
        out.append((float(ious.max()), float(abs(res["scores"][k] - ref["scores"][i])), float(mask)))
    return out


def dcn_blocks(content: bytes):
    """{backbone block name: (first op index, last op index + 1)} of the DCNv2 layers of an int8 YOLACT++ .tflite
    (ops whose output is named ``.../backbone_1/layers_<i>_<j>_1/conv2_1/...``: the DCN is a block's conv2)."""
    import re

    from ai_edge_litert import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(bytearray(content), 0).subgraphs[0]
    blocks = {}
    for i, op in enumerate(graph.operators):
        for t in op.outputs:
            match = re.search(r"backbone\w*/(layers_\d+_\d+)\w*/conv2\w*/", graph.tensors[t].name.decode())
            if match:
                first, last = blocks.get(match.group(1), (i, i))
                blocks[match.group(1)] = (min(first, i), max(last, i + 1))
    return {name: span for name, span in blocks.items() if span[1] - span[0] > 10}  # a plain conv2 is 1-2 ops


def truncated(content: bytes, num_ops: int) -> bytes:
    """The .tflite's first ``num_ops`` operators, every tensor they produce and they do not consume as an output (so
    that no delegate prunes an op as unused): invoking it costs the time of those operators."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    graph = model.subgraphs[0]
    graph.operators = graph.operators[:num_ops]
    consumed = {t for op in graph.operators for t in op.inputs}
    graph.outputs = [t for op in graph.operators for t in op.outputs if t not in consumed]
    model.signatureDefs = []
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def profile_dcn_blocks(content: bytes, blocks, x):
    """Time of each DCNv2 layer inside the int8 graph: the graph cut just before and just after the layer's ops
    (:func:`truncated`), the difference of their invoke times (each cut graph timed on its own, warm: the min of
    2 * -rounds + 1 consecutive invokes; interleaving interpreters slows each by the others' thread pools and
    memory). LiteRT's Python package has no per-op profiler; ops of a layer are contiguous in the converter's order
    up to a few interleaved neighbours, so the per-layer figures are approximate, their sum close."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    cuts = sorted({c for span in blocks.values() for c in span})
    best = {}
    for n in cuts:
        it = Interpreter(model_content=truncated(content, n), num_threads=FLAGS.num_threads)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        best[n] = float("inf")
        for _ in range(2 * FLAGS.rounds + 1):
            t0 = time.perf_counter()
            it.invoke()
            best[n] = min(best[n], time.perf_counter() - t0)
        del it
    per = {name: 1000 * (best[b] - best[a]) for name, (a, b) in sorted(blocks.items())}
    print(f"  DCNv2 layers ({len(per)}): {sum(per.values()):.1f} ms in all; "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in per.items()))


def profile_openvino(name, path, inputs):
    """OpenVINO's per-node profile (``PERF_COUNT``, compiled apart: the counters cost time) of the last of
    ``inputs``, summed by node type."""
    request = _compile_openvino(path, PERF_COUNT=True,
                                **({"INFERENCE_PRECISION_HINT": "bf16"} if "bfloat16" in name else {})
                                ).create_infer_request()
    for x in inputs:
        request.infer({"images": x})
    agg = collections.Counter()
    nodes = []
    for p in request.profiling_info:
        seconds = p.real_time.total_seconds()
        agg[f"{p.node_type} ({p.exec_type})"] += seconds
        nodes.append((seconds, p.node_name, p.node_type))
    total = sum(agg.values())
    print(f"\n{name}: last inference {1000 * total:.1f} ms in {len(nodes)} nodes; by node type:")
    for k, v in agg.most_common(8):
        print(f"  {k:45s} {1000 * v:7.1f} ms {100 * v / total:5.1f} %")
    print("  slowest nodes:")
    for seconds, node, kind in sorted(nodes, reverse=True)[:5]:
        print(f"  {node[:80]:80s} {kind:12s} {1000 * seconds:6.1f} ms")


def _label(variant):
    """A variant's name, or for a model file / folder: ``<config name> <input size> <file name>``."""
    if not _is_file_variant(variant):
        return variant
    from yolact.checkpoint import resolve_run

    cfg = resolve_run(_path(variant))[0]
    return f"{cfg.name} {cfg.img_size_text} {os.path.basename(os.path.normpath(variant))}"


def main(argv):
    del argv
    if not FLAGS.export_dir and any(v not in ("inproc_float32", "inproc_bfloat16", "openvino_int8")
                                    and not _is_file_variant(v)
                                    for v in FLAGS.variants):
        raise UserError("-export_dir is required for the exported variants")
    from yolact.ops.image_io import read_image
    from yolact.ops.preprocess import resize_image

    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        raise UserError(f"no photo matches {FLAGS.images}")
    photos = [read_image(p) for p in paths]
    runners = {v: build(v) for v in FLAGS.variants}
    load_before = os.getloadavg()[0]
    totals = {v: collections.Counter() for v in runners}
    detections = collections.Counter()
    matches = {v: [] for v in runners}
    first = {}  # photo index -> (model name, the first variant's result), from the warm-up pass
    for r in range(FLAGS.rounds + 1):
        for v, runner in runners.items():
            for i, image in enumerate(photos):
                timings = {}
                result = runner.predict(image, timings)
                first.setdefault(i, (runner.cfg.name, result))
                if r:
                    totals[v].update(timings)
                    detections[v] += int((result["scores"] > 0.3).sum())
                elif FLAGS.agreement and v != FLAGS.variants[0] and runner.cfg.name == first[i][0]:
                    matches[v] += match_detections(first[i][1], result, 0.3)
    load_after = os.getloadavg()[0]
    n = FLAGS.rounds * len(photos)
    cfg = next(iter(runners.values())).cfg
    print(f"{', '.join(sorted({r.cfg.name for r in runners.values()}))} at {cfg.img_size_text}, {len(photos)} photos x {FLAGS.rounds} rounds, batch 1, "
          f"{FLAGS.num_threads} runtime threads, {os.cpu_count()} CPUs; load average {load_before:.2f} before, "
          f"{load_after:.2f} after")
    first = None
    for v, stages in totals.items():
        ms = 1000 * sum(stages.values()) / n
        first = first or ms
        parts = ", ".join(f"{k} {1000 * s / n:.1f}" for k, s in stages.items())
        print(f"{_label(v):17s} {ms:8.1f} ms/photo  ({parts})  x{ms / first:.2f} of {_label(FLAGS.variants[0])}, "
              f"{detections[v] / n:.1f} detections > 0.3 / photo")
    if FLAGS.agreement:
        import numpy as np

        for v in list(runners)[1:]:
            if matches[v]:
                a = np.array(matches[v])
                print(f"{_label(v):17s} vs {_label(FLAGS.variants[0])}: {len(a)} detections > 0.3 matched; box IoU "
                      f"mean {a[:, 0].mean():.3f} (min {a[:, 0].min():.3f}), |score difference| mean "
                      f"{a[:, 1].mean():.4f} (max {a[:, 1].max():.4f}), |mask score difference| mean "
                      f"{a[:, 2].mean():.4f} (max {a[:, 2].max():.4f})")
    if FLAGS.profile:
        inputs = [resize_image(p, cfg) for p in photos]
        for v in runners:
            if v.startswith("openvino"):
                profile_openvino(v, _path(v), inputs)
        for v in runners:
            if v == "tflite_int8" or (os.path.isfile(v) and v.endswith("int8.tflite")):
                profile_tflite_int8(_path(v), inputs)


if __name__ == "__main__":
    run(main)
