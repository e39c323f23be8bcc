"""Weights outside the program: lower once, then give the same .pte new weights by writing only a .ptd.

Investigation for issue 16, item 4 ("Rebuild after retraining"). For each system of the trained tiny fixture
(tests/fixtures/tiny_overfit, conformer_tiny):

1. lower it with every XNNPACK constant tagged external (`delegate_constant_tag` in each node's
   `meta["custom"]`) and the remaining program constants too (`ExecutorchBackendConfig(external_constants=...)`),
   so `to_executorch` returns a small .pte plus one `weights.ptd` (ExecuTorch named data map);
   while lowering, record where each XNNPACK constant came from (the exported program's parameter name and the
   layout/packing XNNPACK applied): the "recipe";
2. run .pte + .ptd with the Python ExecuTorch runtime (`Runtime.load_program(pte, data_path=ptd)`) against eager;
3. make "retrained" weights (every floating tensor of the checkpoint but the fixed frontend perturbed by seeded
   noise), extract and quantize that system and write ONLY a new .ptd from the recipe (no export, no
   lowering): the new tensors, laid out and packed as XNNPACK would, under the keys program 1's .pte names;
4. run program 1's .pte with the new .ptd and compare to the new weights' eager output; with
   --check-lowered, also lower the new weights and compare program, data and outputs with step 3's.

The XNNPACK serializer names each constant by the sha256 of its bytes, so a .ptd of another lowering does not
fit (its keys differ); replaying the recipe on the original weights must reproduce every key, which checks the
replay is exactly what lowering writes. The recipe is recorded by wrapping XNNPACK's private
`NodeVisitor.get_serialized_buffer_index` and `get_quant_params` (no public hook in executorch 1.5.1).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/external_weights.py \
        --systems d2-f128-h2-w32,d2-f128-h2-w8,d2-f128-h2-w4 --baseline --check-lowered \
        --out /tmp/external_weights
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import hashlib
import math
import time
from pathlib import Path

import torch
import torch.fx.experimental._config  # noqa: F401  (size-oblivious switch used while lowering)

from allinone.checkpoint import load_checkpoint
from allinone.export import MAX_SAMPLES, WaveformToLogProbs, lower_to_pte
from allinone.models.conformer import MIN_SAMPLES
from allinone.notices import quiet_library_notices
from allinone.quantize import quantize_subnet_
from allinone.spec import SubnetSpec

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_overfit"
TAG = "weights"  # the .ptd file name and the tag every external constant carries
ALIGNMENT = 64  # bytes; XNNPACK asks for 16, ExecuTorch's segments are 128-aligned anyway


def _export(program: torch.nn.Module, example: torch.Tensor):
    from torch.export import Dim, export

    samples = Dim.AUTO(min=MIN_SAMPLES, max=MAX_SAMPLES)
    return export(program, (example,), dynamic_shapes={"waveform": {1: samples}}, strict=False)


def _eager_state(program: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of the eager program under the name lowering gives it: torchao's quantized weights unwrapped
    into plain tensors (`<layer>.parametrizations.weight.original0` = int values, `original1` = scales), as
    torch.export -> to_edge sees them."""
    from torchao.utils import unwrap_tensor_subclass

    program = unwrap_tensor_subclass(copy.deepcopy(program))
    return {**dict(program.named_parameters()), **dict(program.named_buffers())}


def _state(ep) -> dict[str, torch.Tensor]:
    """Every tensor the exported program holds, by its name in the graph signature."""
    return {**ep.state_dict, **ep.constants}


class _Recorder:
    """Wraps XNNPACK's constant serializers to note, for each constant, its source tensor and transform."""

    def __init__(self):
        self.entries: list[dict] = []

    def __enter__(self):
        from executorch.backends.xnnpack.operators import node_visitor
        from executorch.backends.xnnpack.utils.utils import get_param_tensor

        self._cls = node_visitor.NodeVisitor
        self._orig = self._cls.get_serialized_buffer_index, self._cls.get_quant_params
        recorder, (orig_buffer, orig_quant) = self, self._orig

        def buffer_index(visitor, tensor, xnn_graph, vals_to_ids, convert_to_nhwc=False,
                         swap_in_out_for_weights=False, quant_params=None, force_fp32=False, groups=1):
            before = len(xnn_graph.constant_data)
            index = orig_buffer(visitor, tensor, xnn_graph, vals_to_ids, convert_to_nhwc, swap_in_out_for_weights,
                                quant_params, force_fp32, groups)
            if len(xnn_graph.constant_data) > before:
                source = tensor if quant_params is None else quant_params.q_input
                recorder.entries.append(dict(
                    kind="weight", key=xnn_graph.constant_data[-1].named_key,
                    fqn=_source_name(visitor.exported_program, source), nhwc=convert_to_nhwc,
                    shape=tuple(get_param_tensor(visitor.exported_program, source).shape),
                    swap=swap_in_out_for_weights, force_fp32=force_fp32, groups=groups,
                    qdtype=None if quant_params is None else quant_params.dtype,
                    qc4w=quant_params is not None and quant_params.is_qc4w))
            return index

        def quant_params_(visitor, quant_params, xnn_graph, external_tag=None):
            before = len(xnn_graph.constant_data)
            result = orig_quant(visitor, quant_params, xnn_graph, external_tag)
            if len(xnn_graph.constant_data) > before:  # per-channel scales stored as a constant
                scale = quant_params.scale
                state = _state(visitor.exported_program)
                names = [n for n, t in state.items() if t is scale] or \
                        [n for n, t in state.items() if t.shape == scale.shape and torch.equal(t, scale)]
                if len(names) != 1:
                    raise RuntimeError(f"cannot tell which tensor holds these scales: {names}")
                recorder.entries.append(dict(kind="scale", key=xnn_graph.constant_data[-1].named_key, fqn=names[0],
                                             group_wise=bool(quant_params.per_channel_group)))
            return result

        self._cls.get_serialized_buffer_index = buffer_index
        self._cls.get_quant_params = quant_params_
        return self

    def __exit__(self, *exc):
        self._cls.get_serialized_buffer_index, self._cls.get_quant_params = self._orig


def _source_name(ep, node) -> str:
    sig = ep.graph_signature
    fqn = (sig.inputs_to_parameters.get(node.name) or sig.inputs_to_buffers.get(node.name)
           or sig.inputs_to_lifted_tensor_constants.get(node.name))
    if fqn is None:
        raise RuntimeError(f"XNNPACK constant {node.name} is not a tensor of the exported program "
                           "(made by a lowering pass): its bytes cannot be replayed")
    return fqn


def _storage_bytes(value: torch.Tensor) -> bytes:
    """The tensor's whole storage, as XNNPACK's serializer copies it (ctypes over untyped_storage)."""
    storage = value.untyped_storage()
    array = ctypes.cast(storage.data_ptr(), ctypes.POINTER(ctypes.c_char * storage.nbytes())).contents
    return bytes(array)


def _constant_bytes(value: torch.Tensor, entry: dict) -> bytes:
    """What XNNPACK's get_serialized_buffer_index stores for `value` (executorch 1.5.1), for the transforms
    `entry` recorded."""
    from executorch.backends.xnnpack.operators.node_visitor import NodeVisitor

    value = value.contiguous()
    if entry["kind"] == "scale":
        return _storage_bytes(value.to(torch.bfloat16) if entry["group_wise"] else value)
    if tuple(value.shape) != entry["shape"]:  # e.g. a conv1d weight XNNPACK runs as conv2d (unsqueezed)
        if value.numel() != math.prod(entry["shape"]):
            raise RuntimeError(f"{entry['fqn']}: shape {tuple(value.shape)}, the program has {entry['shape']}")
        value = value.reshape(entry["shape"]).contiguous()
    if entry["qdtype"] is not None and value.dtype != entry["qdtype"]:
        raise RuntimeError(f"{entry['fqn']}: expected weights already quantized to {entry['qdtype']} "
                           f"(torchao), got {value.dtype}")
    if entry["qdtype"] is None and (value.dtype not in (torch.float16, torch.bfloat16) or entry["force_fp32"]):
        value = value.to(torch.float32).contiguous()
    if entry["swap"]:
        shape, groups = value.shape, entry["groups"]
        value = value.reshape((groups, shape[0] // groups) + tuple(shape[1:]))
        value = value.permute((0, 2, 1) + tuple(range(3, value.dim())))
        value = value.reshape((shape[1] * groups, shape[0] // groups) + tuple(shape[2:])).contiguous()
    if entry["nhwc"]:
        value = value.to(memory_format=torch.channels_last)
    if entry["qc4w"]:
        value = NodeVisitor.convert_to_qc4w(value)
    return _storage_bytes(value)


def lower_external(program: torch.nn.Module, example: torch.Tensor):
    """Lower with every constant external; return (.pte bytes, .ptd bytes, recipe, seconds)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    seconds = {}
    start = time.perf_counter()
    ep = _export(program, example)
    seconds["export"] = time.perf_counter() - start
    # Every placeholder and call is tagged, not only the weights: for a quantized weight XNNPACK reads the
    # tag from the dequantize call it serializes, which carries none if only the placeholder is tagged.
    for node in ep.graph.nodes:
        if node.op in ("placeholder", "call_function"):
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = TAG
    with torch.fx.experimental._config.patch(backed_size_oblivious=True), _Recorder() as recorder:
        start = time.perf_counter()
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        seconds["lower"] = time.perf_counter() - start
        start = time.perf_counter()
        et = edge.to_executorch(ExecutorchBackendConfig(external_constants=lambda node: TAG))
        seconds["serialize"] = time.perf_counter() - start
    if set(et._tensor_data) != {TAG}:
        raise RuntimeError(f"expected one data file {TAG!r}, got {sorted(et._tensor_data)}")
    return et.buffer, bytes(et._tensor_data[TAG]), recorder.entries, seconds


def write_ptd(recipe: list[dict], template_ptd: bytes, program: torch.nn.Module):
    """A .ptd for the program the recipe was recorded from, holding `program`'s weights (no export, no lowering).
    Returns (.ptd bytes, seconds)."""
    from executorch.exir._serialize._cord import Cord
    from executorch.exir._serialize.data_serializer import DataEntry, DataPayload
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    start = time.perf_counter()
    state = _eager_state(program)
    template = FlatTensorSerializer().deserialize(Cord(template_ptd))
    new = {}
    for entry in recipe:
        data = _constant_bytes(state[entry["fqn"]], entry)
        # XNNPACK stores equal constants once (key = sha256 of the bytes); if the new weights make them differ,
        # one entry cannot hold both and the program would need lowering again.
        if new.setdefault(entry["key"], data) != data:
            raise RuntimeError(f"{entry['fqn']}: shares a constant with another tensor in the lowered program, "
                               "but the new weights differ; lower again")
    buffers, named = [], {}
    for key, data_entry in template.named_data.items():
        old = bytes(template.buffers[data_entry.buffer_index])
        if key in new:
            data = new[key]
        elif key in state:  # a constant left to ExecuTorch's own kernels: stored under its name, as is
            data = bytes(state[key].contiguous().untyped_storage())
        else:
            raise RuntimeError(f"{key}: a .ptd entry neither XNNPACK's recipe nor the program's tensors explain")
        if len(data) != len(old):
            raise RuntimeError(f"{key}: {len(data)} bytes for an entry of {len(old)}")
        named[key] = DataEntry(len(buffers), ALIGNMENT, data_entry.tensor_layout)
        buffers.append(data)
    ptd = bytes(FlatTensorSerializer().serialize(DataPayload(buffers=buffers, named_data=named)))
    return ptd, time.perf_counter() - start


def replay_matches_keys(recipe: list[dict], program: torch.nn.Module) -> int:
    """Replaying the recipe on the weights it was recorded from must give bytes whose sha256 is the key."""
    state = _eager_state(program)
    bad = 0
    for entry in recipe:
        digest = hashlib.sha256(_constant_bytes(state[entry["fqn"]], entry)).hexdigest()
        bad += ("scale_" if entry["kind"] == "scale" else "") + digest != entry["key"]
    return bad


def _ptd_contents(ptd: bytes) -> list[bytes]:
    """The data entries of a .ptd, names aside, in a canonical order."""
    from executorch.exir._serialize._cord import Cord
    from executorch.extension.flat_tensor.serialize.serialize import FlatTensorSerializer

    payload = FlatTensorSerializer().deserialize(Cord(ptd))
    return sorted(bytes(payload.buffers[e.buffer_index]) for e in payload.named_data.values())


def run(pte: Path, ptd: Path | None, waveform: torch.Tensor) -> torch.Tensor:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(pte, data_path=ptd)
    return program.load_method("forward").execute([waveform])[0]


def perturbed(model: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """The model with every floating tensor moved by seeded noise of `scale` x its own std (a "retrained" one)."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in other.state_dict().items():
            if tensor.is_floating_point() and tensor.numel() > 1 and "frontend" not in name:
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.add_(noise * scale * tensor.float().std().clamp_min(1e-3))
    return other


def program_for(model, spec: SubnetSpec) -> torch.nn.Module:
    subnet = model.extract_subnet(spec)
    quantize_subnet_(subnet, spec.quant_scheme)
    return WaveformToLogProbs(subnet).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="d2-f128-h2-w32,d2-f128-h2-w8")
    parser.add_argument("--baseline", action="store_true", help="also lower the usual way (weights in the .pte)")
    parser.add_argument("--check-lowered", action="store_true",
                        help="also lower the second weights, and compare that program to the first with the new .ptd")
    parser.add_argument("--noise", type=float, default=0.2, help="perturbation of the second weights, x std")
    parser.add_argument("--out", type=Path, default=Path("/tmp/external_weights"))
    args = parser.parse_args()
    quiet_library_notices()  # torchao's and torch's import-time notices, as the CLI
    model_a = load_checkpoint(FIXTURE).model
    model_b = perturbed(model_a, args.noise, seed=0)
    example = torch.zeros(1, 32000)
    waveform = torch.randn(1, 24000, generator=torch.Generator().manual_seed(1)) * 0.1
    for spec_id in args.systems.split(","):
        spec = SubnetSpec.from_id(spec_id)
        out = args.out / spec.id
        out.mkdir(parents=True, exist_ok=True)
        prog_a = program_for(model_a, spec)
        start = time.perf_counter()
        prog_b = program_for(model_b, spec)
        extract_b = time.perf_counter() - start
        with torch.no_grad():
            eager_a, eager_b = prog_a(waveform), prog_b(waveform)
            if args.baseline:
                pte, *_, seconds = lower_to_pte(prog_a, example)
                (out / "inline.pte").write_bytes(pte)
                print(f"{spec.id}: weights inside: {len(pte):,} B .pte, lowered in {sum(seconds.values()):.1f} s")
            pte, ptd, recipe, seconds = lower_external(prog_a, example)
            (out / "program.pte").write_bytes(pte)
            (out / "a.ptd").write_bytes(ptd)
            print(f"{spec.id}: weights outside: {len(pte):,} B .pte + {len(ptd):,} B .ptd, lowered in "
                  f"{sum(seconds.values()):.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in seconds.items())}); "
                  f"{sum(e['kind'] == 'weight' for e in recipe)} XNNPACK weights, "
                  f"{sum(e['kind'] == 'scale' for e in recipe)} scale tensors")
            print(f"  replay on the same weights: {replay_matches_keys(recipe, prog_a)} keys differ")
            ptd_b, seconds_b = write_ptd(recipe, ptd, prog_b)
            (out / "b.ptd").write_bytes(ptd_b)
            print(f"  new .ptd for the perturbed weights: {len(ptd_b):,} B; extract + quantize {extract_b:.2f} s, "
                  f"write {seconds_b:.2f} s (no export, no lowering)")
            if args.check_lowered:
                pte_b, ptd_b_lowered, recipe_b, seconds = lower_external(prog_b, example)
                (out / "b_lowered.pte").write_bytes(pte_b)
                (out / "b_lowered.ptd").write_bytes(ptd_b_lowered)
                renamed = pte
                for entry_a, entry_b in zip(recipe, recipe_b, strict=True):
                    renamed = renamed.replace(entry_a["key"].encode(), entry_b["key"].encode())
                print(f"  second weights lowered: {sum(seconds.values()):.1f} s; their .pte equals the first's with "
                      f"the constant names swapped: {renamed == pte_b}; same .ptd contents: "
                      f"{_ptd_contents(ptd_b_lowered) == _ptd_contents(ptd_b)}")
        if args.check_lowered:
            diff = (run(out / "program.pte", out / "b.ptd", waveform)
                    - run(out / "b_lowered.pte", out / "b_lowered.ptd", waveform)).abs().max().item()
            print(f"  pte + b.ptd vs the second weights lowered: max |diff| {diff:.2e}")
        if args.baseline:
            diff = (run(out / "inline.pte", None, waveform) - eager_a).abs().max().item()
            print(f"  weights-inside .pte vs eager A: max |diff| {diff:.2e}")
        ref = eager_a.abs().max().item()
        for label, ptd_path, eager in (("pte + a.ptd vs eager A", out / "a.ptd", eager_a),
                                       ("pte + b.ptd vs eager B", out / "b.ptd", eager_b)):
            diff = (run(out / "program.pte", ptd_path, waveform) - eager).abs().max().item()
            print(f"  {label}: max |diff| {diff:.2e} (outputs up to {ref:.1f}; A vs B differ by "
                  f"{(eager_a - eager_b).abs().max().item():.2f})")


if __name__ == "__main__":
    main()
