#!/usr/bin/env python
"""FINDINGS probe: what real DeepSpeed 0.19.8 ``load_universal`` accepts from ``uc convert --format deepspeed``
outputs of the MoE fixtures (native ``deepspeed.moe.layer.MoE`` ep 2, and AutoEP x AutoTP ep2_tp2_zero1).

Run under torchrun (CPU, gloo, 127.0.0.1), one process per rank, 2 ranks:

  torchrun --nproc_per_node 2 moe_resume.py --fixture <fixtures/deepspeed/<case>> \
      --load-dir <dir holding latest_universal + <tag>> [--stage S] --result out.json

Builds the fixture's OWN model, optimizer groups and ds_config with the shared generator
(fixtures/deepspeed/generator/moe/make_moe_fixtures.py: ``build_model`` / ``param_groups`` /
``ds_config(load_universal=True)`` for the native family; ``tp_ds_config`` + the AutoEP generator's ``make_engine``
for autoep_tp, which needs transformers==5.22.2), calls ``engine.load_checkpoint(load_dir, tag)`` and
  (a) records whether DeepSpeed loads it (its exception verbatim otherwise),
  (b) gathers the full fp32 params + Adam exp_avg / exp_avg_sq with the generator's own gather
      (``safe_get_full_fp32_param`` / ``safe_get_full_optimizer_state`` after the re-link, experts all-gathered over
      the EP group and renamed to their GLOBAL expert id; no ZeRO: module param + torch optimizer state) and
      compares them with expected.safetensors bit for bit. Each mismatching tensor is classified: still equal to
      the pre-load init value (not restored), equal to ANOTHER tensor's expected value (restored from the wrong
      file, e.g. the wrong expert), or other.
Never raises on a DeepSpeed error: rank 0 writes the JSON result for moe_resume.sh.

"""
import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("DS_BUILD_OPS", "0")

import torch

STEPS = 3


def gen_dir(fixture):
    return os.path.join(os.path.dirname(os.path.abspath(os.path.normpath(fixture))), "generator", "moe")


def build_native(M, deepspeed, stage):
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    V = M.VARIANTS["main"]
    ep = 2
    ep_rank = rank % ep  # DeepSpeed's default EP groups = consecutive ranks (asserted below, as the generator does)
    num_local = V["experts"] // ep
    model = M.build_model("main", ep, ep_rank)
    cfg = M.ds_config(stage, world // ep, world, load_universal=True)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=M.param_groups(model), config=cfg)
    layers = M.moe_info(engine)
    assert layers[0]["ep_rank"] == ep_rank, (layers[0]["ep_rank"], ep_rank)

    def gather(with_optim=True):
        return M.gather_full_state(engine, ep_rank, num_local, with_optim=with_optim)

    return engine, cfg, gather


def build_autoep_tp(M, deepspeed, stage):
    import make_autoep_fixtures as A
    A.VARIANTS.update(M.TP_VARIANTS)
    cfg = M.tp_ds_config(stage, 2, 2)
    cfg["checkpoint"] = {"load_universal": True}
    engine = A.make_engine(deepspeed, "tpmain", cfg)

    def gather(with_optim=True):
        return M.tp_gather_full_state(engine, with_optim=with_optim)[0]

    return engine, cfg, gather


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fixture", required=True)
    p.add_argument("--load-dir", required=True)
    p.add_argument("--tag", default=f"global_step{STEPS}_universal")
    p.add_argument("--stage", type=int, default=None, help="ZeRO stage to resume with (default: the fixture's)")
    p.add_argument("--result", required=True)
    a = p.parse_args()

    manifest = json.load(open(os.path.join(a.fixture, "manifest.json")))
    family = manifest.get("family", "native")  # "native" (deepspeed.moe.layer.MoE) or "autoep_tp"
    fixture_stage = int(manifest["zero_stage"])
    stage = fixture_stage if a.stage is None else a.stage

    sys.path.insert(0, gen_dir(a.fixture))
    import make_moe_fixtures as M  # also puts ../autoep on sys.path
    import make_autoep_fixtures as A
    deepspeed = A.setup_dist()
    rank = torch.distributed.get_rank()
    res = {"fixture": os.path.basename(os.path.normpath(a.fixture)), "family": family, "load_dir": a.load_dir,
           "tag": a.tag, "fixture_zero_stage": fixture_stage, "resume_zero_stage": stage,
           "world_size": torch.distributed.get_world_size()}

    def dump():
        if rank == 0:
            with open(a.result, "w") as f:
                json.dump(res, f, indent=1)
            print("MOE_RESUME", json.dumps({k: v for k, v in res.items() if not k.endswith("traceback_tail")}))

    try:
        engine, cfg, gather = (build_autoep_tp if family == "autoep_tp" else build_native)(M, deepspeed, stage)
        res["optimizer_class"] = type(engine.optimizer).__name__
        init = gather(with_optim=False)
    except BaseException as e:
        res["a_loaded"] = False
        res["setup_error"] = f"{type(e).__name__}: {e}"
        res["setup_traceback_tail"] = traceback.format_exc()[-4000:]
        dump()
        return

    # (a) load
    try:
        path, _ = engine.load_checkpoint(a.load_dir, tag=a.tag)
        if path is None:
            raise RuntimeError("load_checkpoint returned (None, None)")
        res["a_loaded"] = True
    except BaseException as e:
        res["a_loaded"] = False
        res["load_error"] = f"{type(e).__name__}: {e}"
        res["load_traceback_tail"] = traceback.format_exc()[-4000:]
    ok = torch.tensor([1 if res["a_loaded"] else 0])
    torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    if not ok.item():
        res["a_loaded"] = False
        dump()
        return
    try:
        res["global_steps_after_load"] = engine.global_steps
    except Exception:
        pass

    # (b) compare with expected
    from safetensors.torch import load_file
    exp = load_file(os.path.join(a.fixture, "expected.safetensors"))
    try:
        state = gather(with_optim=True)
    except BaseException as e:
        res["b_error"] = f"{type(e).__name__}: {e}"
        res["b_traceback_tail"] = traceback.format_exc()[-4000:]
        # fall back to the fp32 params alone
        try:
            state = gather(with_optim=False)
        except BaseException:
            dump()
            return
    matched, mism = [], {}
    for k, e in exp.items():
        s = state.get(k)
        if s is None:
            mism[k] = "missing after load"
            continue
        if s.shape != e.shape:
            mism[k] = f"shape {list(s.shape)} != expected {list(e.shape)}"
            continue
        if torch.equal(s, e):
            matched.append(k)
            continue
        if k in init and torch.equal(s, init[k]):
            mism[k] = "== pre-load init (not restored)"
            continue
        other = [o for o, t in exp.items() if o != k and t.shape == s.shape and torch.equal(t, s)]
        mism[k] = (f"== expected of {other[0]}" if other else f"max|d| {(s - e).abs().max().item():.3g}")
    kinds = ("fp32", "exp_avg", "exp_avg_sq")
    res["n_expected"] = len(exp)
    res["n_matched"] = len(matched)
    res["matched_by_kind"] = {kd: sum(1 for k in matched if k.endswith("/" + kd)) for kd in kinds}
    res["expected_by_kind"] = {kd: sum(1 for k in exp if k.endswith("/" + kd)) for kd in kinds}
    is_exp = lambda k: "deepspeed_experts" in k or ".mlp.experts." in k
    res["matched_experts"] = sum(1 for k in matched if is_exp(k))
    res["expected_experts"] = sum(1 for k in exp if is_exp(k))
    res["mismatching"] = mism
    res["b_bitwise_equal"] = not mism
    dump()
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
