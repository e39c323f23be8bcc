"""Runtime latency of conformer_small's full system at float, 8-bit and 4-bit: eager PyTorch, the .pte from
Python, the .pte from the C++ runner, and ONNX Runtime on an ONNX export of the same extracted module.

    .venv/bin/pip install onnxruntime onnx onnxscript        # benchmark-only dependencies
    .venv/bin/python benchmarks/runtime_latency.py --out runs/runtime_latency

Weights are random (latency does not depend on their values). Every runtime gets the same audio: the shipped
speech clip repeated to --seconds (5 s by default), one warm-up call, then --runs timed calls split into
--rounds rounds that interleave the runtimes (the C++ runner runs once per round; its time is the median of
its per-round p50s). The table gives the median (p50) and real-time factor, and each runtime's latency as a
ratio to ONNX Runtime's at the same precision and thread count (below 1 = faster than ONNX Runtime).
`--reuse` skips lowering when an earlier run left the bundles in --out (same seed, same code).

ONNX Runtime quantizes with its own tools, at the granularity the .pte uses: 8-bit = dynamic int8
activations with per-channel int8 weights (`quantize_dynamic`), 4-bit = per-group int4 weights,
block 32, symmetric (`MatMulNBitsQuantizer`, accuracy level 4 = int8 activations); both only on the linear
layers the .pte quantizes (the frontend's mel projection and LayerNorm's mean stay float, as in the .pte).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from allinone.data.tokenizer import CharTokenizer
from allinone.export import MAX_SAMPLES, WaveformToLogProbs, export_subnet
from allinone.models.conformer import MIN_SAMPLES, conformer_small
from allinone.notices import quiet_library_notices
from allinone.package import BundleSizes, bundle_manifest, versions, write_bundle
from allinone.quantize import quantize_subnet_
from allinone.size import subnet_size, subnet_weight_bytes
from allinone_runtime.cpp import build_runner, run_runner
from allinone_runtime.engine import Engine, set_threads

log = logging.getLogger("runtime_latency")


def _time_calls(call, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _bundle(model, program, directory: Path):
    """A bundle the runtimes can open, with the build's manifest less the checkpoint and the verification
    (the benchmark's random weights would fail `allinone build`'s transcript verification)."""
    size = subnet_size(model, program.spec)
    sizes = BundleSizes(size.params, size.weight_bytes, size.macs_per_second,
                        subnet_weight_bytes(model, model.search_space.largest()))
    manifest = bundle_manifest(model, program, sizes, family="conformer", vocabulary=CharTokenizer().to_dict())
    return write_bundle(directory, program.pte, manifest, force=True)


def _lowering_summary(manifest: dict) -> dict:
    """Total lowering seconds and the ops left outside XNNPACK, from a bundle's manifest."""
    lowering = manifest["lowering"]
    return {"seconds": round(sum(lowering["seconds"].values()), 1), "portable_ops": lowering["portable_ops"]}


def _onnx_float(module: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    try:  # the dynamo exporter, with the program's dynamic audio length
        from torch.export import Dim

        torch.onnx.export(module, (example,), str(path), dynamo=True, input_names=["waveform"],
                          output_names=["log_probs"],
                          dynamic_shapes={"waveform": {1: Dim.AUTO(min=MIN_SAMPLES, max=MAX_SAMPLES)}})
    except Exception as err:  # noqa: BLE001 - fall back to the TorchScript exporter at the benchmark's length
        log.warning("dynamo ONNX export failed (%s); using the TorchScript exporter", str(err).splitlines()[0])
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["waveform"],
                          output_names=["log_probs"], opset_version=17)
    return path


def _linear_nodes(model) -> list[str]:
    """The MatMul/Gemm nodes that are the extracted module's nn.Linear layers the .pte quantizes: a constant
    (in, out) weight with out > 1 and `in` a multiple of 32. The exporter also writes the frontend's mel
    projection (in 201) and LayerNorm's mean (out 1) as constant MatMuls; those stay float, as in the .pte."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type in ("MatMul", "Gemm") and len(shapes.get(node.input[1], ())) == 2
            and shapes[node.input[1]][0] % 32 == 0 and shapes[node.input[1]][1] > 1]


def _onnx_quantized(float_path: Path, bits: int, directory: Path) -> tuple[Path, str]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = directory / f"model-w{bits}.onnx"
    linears = _linear_nodes(onnx.load(str(float_path)))
    if bits == 8:
        quantize_dynamic(str(float_path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_quantize=linears)
        return out, f"quantize_dynamic int8 per-channel, {len(linears)} linears"
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(float_path))
    others = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in linears]
    quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True,
                                     accuracy_level=4,  # 4: int8 activations in the MatMulNBits kernel
                                     nodes_to_exclude=others)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out))
    return out, f"MatMulNBits int4, block 32, symmetric, accuracy_level 4, {len(linears)} linears"


def _onnx_bytes(path: Path) -> int:
    """The model and its external weights file, when the exporter wrote one."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/runtime_latency", help="bundles, ONNX files and results.json")
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length per call (default: 5)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per runtime (default: 20)")
    parser.add_argument("--bits", default="32,8,4", help="precisions (default: 32,8,4)")
    parser.add_argument("--threads", default="1,2", help="thread counts (default: 1,2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds the runs are split into")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse bundles and the float ONNX file an earlier run left in --out (same seed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_library_notices()  # torchao's and torch's import-time notices, as the CLI
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    clip = str(importlib.resources.files("allinone") / "assets" / "sample.wav")
    samples = np.resize(sf.read(clip, dtype="float32")[0], round(args.seconds * 16000)).astype(np.float32)
    audio_path = out / "audio.wav"
    sf.write(audio_path, samples, 16000, subtype="FLOAT")  # the C++ runner reads exactly these samples
    waveform = torch.from_numpy(samples)[None]  # (1, N)

    torch.manual_seed(0)
    model = conformer_small(29).eval()
    largest = model.search_space.largest()
    binary = build_runner(out / "cpp-build")
    float_onnx = None
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        spec = largest.with_bits(bits)
        bundle_dir = out / f"bundle-{spec.id}"
        if args.reuse and (bundle_dir / "manifest.json").is_file():  # lowered by an earlier run, same seed
            eager = WaveformToLogProbs(model.extract_subnet(spec)).eval()
            quantize_subnet_(eager.subnet, bits)
            lowering = _lowering_summary(json.loads((bundle_dir / "manifest.json").read_text()))
            bundle = bundle_dir
        else:
            program = export_subnet(model, spec)
            eager = program.module
            written = _bundle(model, program, bundle_dir)
            bundle, lowering = written.path, _lowering_summary(written.manifest)
        with torch.no_grad():
            if float_onnx is None:
                float_onnx = out / "model-w32.onnx"
                if not (args.reuse and float_onnx.is_file()):
                    float_module = WaveformToLogProbs(model.extract_subnet(largest.with_bits(32))).eval()
                    _onnx_float(float_module, waveform, float_onnx)
        onnx_path, onnx_scheme = (float_onnx, "float32") if bits == 32 else _onnx_quantized(float_onnx, bits, out)
        for threads in (int(t) for t in args.threads.split(",")):
            # Size both thread pools before loading: resetting ExecuTorch's pool under a loaded program is unsafe.
            torch.set_num_threads(threads)
            set_threads(threads)
            engine = Engine(bundle / "model.pte")
            session = _ort_session(onnx_path, threads)
            feed = {session.get_inputs()[0].name: samples[None]}
            calls = {"onnxruntime": lambda: session.run(None, feed), "eager": lambda: eager(waveform),
                     "pte-python": lambda: engine.run(samples)}
            times = {name: [] for name in calls}
            cpp_round_p50s = []
            # Rounds interleave the runtimes, so load from other processes on a shared machine lands on all
            # of them alike rather than on whichever ran during a busy minute.
            with torch.no_grad():
                for name, call in calls.items():
                    call()  # warm-up
                for _ in range(args.rounds):
                    for name, call in calls.items():
                        times[name] += _time_calls(call, args.runs // args.rounds)
                    _, report = run_runner(binary, bundle, audio_path, lengths_s=(args.seconds,),
                                           runs=args.runs // args.rounds, threads=threads,
                                           out_dir=out / f"cpp-{spec.id}-t{threads}")
                    cpp_round_p50s.append(report["latency"][0]["p50_ms"])
            del engine, session
            cpp_p50 = statistics.median(cpp_round_p50s)  # the runner reports a p50 per round
            ort_p50 = statistics.median(times["onnxruntime"])
            for runtime, t in [*times.items(), ("pte-cpp", None)]:
                p50 = cpp_p50 if t is None else statistics.median(t)
                rows.append({"bits": bits, "subnet": spec.id, "threads": threads, "runtime": runtime,
                             "p50_ms": round(p50, 2), "rtf": round(p50 / (args.seconds * 1e3), 4),
                             "ratio_to_ort": round(p50 / ort_p50, 3),
                             "onnx_scheme": onnx_scheme if runtime == "onnxruntime" else None})
                log.info("%s %d thr %-12s p50 %.1f ms (x%.2f of ORT)", spec.id, threads, runtime, p50, p50 / ort_p50)
        rows.append({"bits": bits, "subnet": spec.id, "lower_s": lowering["seconds"],
                     "pte_bytes": (bundle / "model.pte").stat().st_size, "onnx_bytes": _onnx_bytes(onnx_path),
                     "portable_ops": lowering["portable_ops"]})
    results = {"seconds": args.seconds, "runs": args.runs, "torch_threads_note": "torch.set_num_threads per row",
               "rows": rows, "versions": versions()}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{args.seconds:g} s of audio, p50 of {args.runs} calls; "
          f"ratio = latency / ONNX Runtime's (< 1 is faster)\n")
    print("| system | threads | runtime | p50 ms | RTF | x ORT |\n|---|---:|---|---:|---:|---:|")
    for r in rows:
        if "runtime" in r:
            print(f"| {r['subnet']} | {r['threads']} | {r['runtime']} | {r['p50_ms']:.1f} | {r['rtf']:.4f} | "
                  f"{r['ratio_to_ort']:.2f} |")
    print("\n| system | .pte MiB | .onnx MiB | lowering s | ops outside XNNPACK |\n|---|---:|---:|---:|---|")
    for r in rows:
        if "pte_bytes" in r:
            print(f"| {r['subnet']} | {r['pte_bytes'] / 2**20:.2f} | {r['onnx_bytes'] / 2**20:.2f} | {r['lower_s']} | "
                  f"{', '.join(f'{k} x{v}' for k, v in r['portable_ops'].items())} |")


if __name__ == "__main__":
    main()
