"""Loads the .pt files unicheck wrote with real `torch.load(weights_only=True)` (and `mmap=True`) and checks
values, dtypes, shapes, requires_grad and DeepSpeed's key orders. Optionally compares the loaded structure with
a DeepSpeed fixture file. Usage: python3 check_pt.py <interop dir> [<fixture universal zero dir>]
Produce the files with: UC_INTEROP_DIR=/tmp/interop cargo test -p uc-store --test native interop_outputs
"""
import ast
import os
import sys

import torch


def load(path):
    a = torch.load(path, weights_only=True)
    b = torch.load(path, weights_only=True, mmap=True)
    return a, b


def same(a, b):
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.requires_grad == b.requires_grad and torch.equal(a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def shape_of(v):
    if isinstance(v, torch.Tensor):
        return ("tensor", str(v.dtype), tuple(v.shape), v.requires_grad, v.stride(), v.storage_offset())
    if isinstance(v, dict):
        return (type(v).__name__, [(k, shape_of(x)) for k, x in v.items()])
    return (type(v).__name__, v)


def main(out, fixture_zero=None):
    zero = os.path.join(out, "universal", "zero")
    vals = torch.tensor(ast.literal_eval(open(os.path.join(out, "universal", "values.txt")).read()))
    expect = {
        ("w.cat", "fp32"): (["cat_dim", "param"], (4, 6), True, torch.float32),
        ("w.cat", "exp_avg"): (["cat_dim", "param"], (4, 6), False, torch.float32),
        ("w.vocab", "fp32"): (["vocab_tensor", "param"], (6, 4), True, torch.float32),
        ("w.only", "fp32"): (["param"], (24,), True, torch.float32),
        ("w.experts", "fp32"): (["param", "cat_dim", "is_expert_param", "ep_num_experts"], (4, 3, 2), True,
                                torch.float32),
        ("w.flat", "exp_avg_sq"): (None, (24,), False, torch.float32),
        ("w.bf16", "fp32"): (["cat_dim", "param"], (2, 3, 4), False, torch.bfloat16),
    }
    for (p, s), (keys, shape, rg, dtype) in expect.items():
        path = os.path.join(zero, p, s + ".pt")
        v, vm = load(path)
        assert same(v, vm), f"{path}: mmap load differs"
        t = v if keys is None else v["param"]
        if keys is not None:
            assert list(v) == keys, (path, list(v))
        assert tuple(t.shape) == shape and t.dtype == dtype and t.requires_grad == rg, (path, shape_of(v))
        assert torch.equal(t.float().reshape(-1), vals.to(dtype).float()), path
        print(f"ok {p}/{s}.pt: {shape_of(v)}")
    step, _ = load(os.path.join(zero, "w.cat", "step.pt"))
    assert step.dim() == 0 and step.dtype == torch.float32 and step.item() == 3.0, step
    print("ok w.cat/step.pt:", repr(step))
    # byte comparison with torch.save of the same value (all entries except the random serialization id)
    import collections
    import zipfile
    multi = collections.OrderedDict([("a", torch.arange(15, dtype=torch.float32).reshape(3, 5)), ("n", 7),
                                     ("b", torch.arange(7, dtype=torch.bfloat16)),
                                     ("t", (1, 2.5, "x", None, [True]))])
    ref = os.path.join(out, "universal", "torch_ref", "multi.pt")  # same name: the stem names the archive
    os.makedirs(os.path.dirname(ref), exist_ok=True)
    if os.path.exists(ref):
        os.remove(ref)
    torch.save(multi, ref)
    ours_path = os.path.join(out, "universal", "multi.pt")
    zo, zr = zipfile.ZipFile(ours_path), zipfile.ZipFile(ref)
    names = [i.filename.split("/", 1)[1] for i in zo.infolist()]
    assert names == [i.filename.split("/", 1)[1] for i in zr.infolist()], (names, zr.namelist())
    for io, ir in zip(zo.infolist(), zr.infolist()):
        assert io.header_offset == ir.header_offset, (io.filename, io.header_offset, ir.header_offset)
        if not io.filename.endswith("serialization_id"):
            assert zo.read(io) == zr.read(ir), io.filename
    assert os.path.getsize(ours_path) == os.path.getsize(ref)
    v, vm = load(ours_path)
    assert same(v, multi) and same(vm, multi), shape_of(v)
    print("ok multi.pt: same entries, offsets and bytes as torch.save (except serialization_id):", names)
    if fixture_zero:
        for p, s in [("blocks.0.qkv.weight", "fp32"), ("blocks.0.qkv.weight", "exp_avg"),
                     ("blocks.0.qkv.weight", "step")]:
            theirs = torch.load(os.path.join(fixture_zero, p, s + ".pt"), weights_only=True)
            print(f"fixture {p}/{s}.pt: {shape_of(theirs)}")
    print("OK: all .pt files load with torch.load(weights_only=True) and mmap=True")


if __name__ == "__main__":
    main(*sys.argv[1:])
