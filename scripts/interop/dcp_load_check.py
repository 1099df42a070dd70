"""Loads a DCP checkpoint written by `uc convert --format dcp` with torch's own `dcp.load` and compares
every tensor with a fixture's `expected.safetensors` (`<param>/fp32|exp_avg|exp_avg_sq`), bit for bit.

Modes (any combination):
  --plain    a plain nested state dict built from the checkpoint's keys (no model code): strict load,
             every key of the checkpoint requested, every expected tensor compared.
  --tinylm   the fixtures' TinyLM (shared/fixtures/dcp/generator/models.py) + AdamW in one process:
             get_state_dict -> dcp.load -> set_state_dict, then the live params and Adam moments.
  --fsdp2    the same under FSDP2 over 2 ranks (re-runs itself under torchrun, gloo, CPU).

Exit code 0 when every compared tensor is equal; prints one JSON line per mode.
Usage: python dcp_load_check.py DCP_DIR EXPECTED.safetensors [--plain] [--tinylm] [--fsdp2]
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

FIXTURES = os.environ.get("UC_FIXTURES", os.path.join(os.path.dirname(__file__), "../../../shared/fixtures"))


def compare(got, exp, keys):
    bad = [k for k in keys if k not in got or got[k].shape != exp[k].shape or not torch.equal(got[k], exp[k])]
    return {"compared": len(keys), "mismatching": bad}


def set_path(root, path, value):
    d = root
    for i, seg in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(d, list):
            while len(d) <= seg:
                d.append(None)
            if d[seg] is None:
                d[seg] = [] if isinstance(nxt, int) else {}
            d = d[seg]
        else:
            d = d.setdefault(seg, [] if isinstance(nxt, int) else {})
    last = path[-1]
    if isinstance(d, list):
        while len(d) <= last:
            d.append(None)
    d[last] = value


def get_path(root, path):
    for seg in path:
        root = root[seg]
    return root


def plain(ckpt, exp):
    """Every key of the checkpoint as a placeholder in a nested dict; strict dcp.load; compare."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    md = dcp.FileSystemReader(ckpt).read_metadata()
    sd = {}
    paths = md.planner_data
    for key, item in md.state_dict_metadata.items():
        path = paths[key]
        if isinstance(item, BytesStorageMetadata):
            set_path(sd, path, None)
        else:
            set_path(sd, path, torch.empty(item.size, dtype=item.properties.dtype))
    dcp.load(sd, checkpoint_id=ckpt, no_dist=True)
    got = {}
    for key, path in paths.items():
        if path[0] == "model":
            got[f"{path[1]}/fp32"] = get_path(sd, path)
        elif path[:2] == ("optim", "state"):
            got[f"{path[2]}/{path[3]}"] = get_path(sd, path)
    res = compare(got, exp, list(exp))
    steps = {float(get_path(sd, p)) for k, p in paths.items() if p[:2] == ("optim", "state") and p[3] == "step"}
    res["steps"] = sorted(steps)
    groups = sd.get("optim", {}).get("param_groups", [])
    res["param_groups"] = [{k: v for k, v in g.items() if k != "params"} for g in groups]
    res["param_group_sizes"] = [len(g.get("params", [])) for g in groups]
    return res


def tinylm_modules():
    sys.path.insert(0, os.path.join(FIXTURES, "dcp/generator"))
    import models
    return models


def tinylm_fits(exp):
    models = tinylm_modules()
    m = models.make_tinylm(models.VARIANTS["main"])
    names = {f"{n}/fp32": tuple(p.shape) for n, p in m.named_parameters()}
    want = {k: tuple(v.shape) for k, v in exp.items() if k.endswith("/fp32")}
    return names == want


def load_into(model, opt, ckpt):
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    msd, osd = get_state_dict(model, opt)  # initialises AdamW state
    sd = {"model": msd, "optim": osd}
    # Partial: a checkpoint converted from DeepSpeed lacks torch-only hyper-parameters (maximize, ...);
    # those keep the live optimizer's values. Every tensor is compared below, so none can go missing.
    dcp.load(sd, checkpoint_id=ckpt, planner=DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def full(t):
    from torch.distributed.tensor import DTensor
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().float().cpu().contiguous()


def live_state(model, opt):
    got, steps = {}, set()
    for n, p in model.named_parameters():
        got[f"{n}/fp32"] = full(p)
        st = opt.state[p]
        got[f"{n}/exp_avg"] = full(st["exp_avg"])
        got[f"{n}/exp_avg_sq"] = full(st["exp_avg_sq"])
        steps.add(float(full(st["step"])))
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return got, sorted(steps), groups


def tinylm(ckpt, exp):
    models = tinylm_modules()
    model = models.make_tinylm(models.VARIANTS["main"])
    opt = models.make_adamw(model)
    load_into(model, opt, ckpt)
    got, steps, groups = live_state(model, opt)
    res = compare(got, exp, list(exp))
    res.update(steps=steps, param_groups=groups)
    return res


def fsdp2_worker(ckpt, expected):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    dist.init_process_group("gloo")
    models = tinylm_modules()
    mesh = init_device_mesh("cpu", (dist.get_world_size(), ), mesh_dim_names=("dp", ))
    model = models.make_tinylm(models.VARIANTS["main"])
    for b in model.blocks:
        fully_shard(b, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = models.make_adamw(model)
    load_into(model, opt, ckpt)
    got, steps, groups = live_state(model, opt)
    if dist.get_rank() == 0:
        exp = load_file(expected)
        res = compare(got, exp, list(exp))
        res.update(steps=steps, world=dist.get_world_size(), param_groups=groups)
        print("FSDP2_RESULT " + json.dumps(res, default=str), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def fsdp2(ckpt, expected):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           os.environ.get("UC_MASTER_PORT", "29731"), os.path.abspath(__file__), ckpt, expected, "--worker"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("FSDP2_RESULT "):
            return json.loads(line[len("FSDP2_RESULT "):])
    return {"compared": 0, "mismatching": ["<torchrun failed>"], "stderr": out.stderr[-3000:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("expected")
    ap.add_argument("--plain", action="store_true")
    ap.add_argument("--tinylm", action="store_true")
    ap.add_argument("--fsdp2", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        fsdp2_worker(a.ckpt, a.expected)
        return 0
    exp = load_file(a.expected)
    ok = True
    modes = [m for m in ("plain", "tinylm", "fsdp2") if getattr(a, m)]
    for mode in modes:
        if mode in ("tinylm", "fsdp2") and not tinylm_fits(exp):
            print(json.dumps({"mode": mode, "skipped": "expected tensors are not TinyLM's"}))
            continue
        res = {"plain": plain, "tinylm": tinylm, "fsdp2": fsdp2}[mode](a.ckpt, exp if mode != "fsdp2" else a.expected)
        res = {"mode": mode, "ckpt": a.ckpt, **res}
        print(json.dumps(res, default=str))
        ok &= res["compared"] > 0 and not res["mismatching"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
