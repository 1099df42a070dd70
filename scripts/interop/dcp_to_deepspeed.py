#!/usr/bin/env python
"""Resume real DeepSpeed (``"checkpoint": {"load_universal": true}``) from `uc convert <DCP or Megatron fixture>
--format deepspeed` and check the loaded state against the fixture's expected.safetensors.

Run under torchrun (CPU, gloo, 127.0.0.1), one process per rank:

  torchrun --nproc_per_node N dcp_to_deepspeed.py --case <fixtures/{dcp,megatron}/<case>> --load-dir DIR \
      --tag TAG --stage S --result out.json

The model is the fixture's own: for DCP fixtures/dcp/generator/models.py (TinyLM, or TinyMoE with its mse loss)
with the fixture's AdamW groups (ndim >= 2: weight decay 0.1, else 0); for Megatron megatron-core's GPTModel at
TP 1 built as the fixture generator builds it (megatron_load.build_gpt; needs megatron-core 0.16.1) with
Megatron's groups (non-bias ndim >= 2: 0.1, biases and 1-D: 0). Checks
  (a) engine.load_checkpoint(DIR, tag=TAG) succeeds,
  (b) full fp32 params and Adam exp_avg / exp_avg_sq equal expected.safetensors bit for bit,
  (c) DCP only: one more step runs; its loss is reported beside the fixture's loss_step4_original (FSDP2
      reduces in another order, so only closeness is expected; the driver does not fail on it).
Writes a JSON result (rank 0); never raises on a load error. dcp_to_deepspeed.sh drives it.
"""
import argparse
import json
import os
import sys
import traceback
import types

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("DS_BUILD_OPS", "0")

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepspeed_resume as dsr  # noqa: E402  (ds_config, gather_full_state, train_step)


def moe_loss(m, x, t):
    """The ep fixture's training loss (mse of TinyMoE.compute), as TinyMoE's forward (same parameter names)."""
    out = type(m).compute(x, None, m.proj.weight, m.norm.weight, m.router.weight, m.experts.w1, m.experts.b1,
                          m.experts.w2)
    return F.mse_loss(out, t)


def megatron_groups(model):
    """Megatron's optimizer groups (`_get_param_groups`): weight decay 0.1 for ndim >= 2 non-bias tensors,
    0 for biases and 1-D ones, in that order (the order of the param groups in common.pt)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        ndim = len(p.ds_shape) if hasattr(p, "ds_shape") else p.dim()
        (no_decay if n.endswith(".bias") or ndim == 1 else decay).append(p)
    return [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True, help="fixtures/dcp/<case> (manifest.json, expected.safetensors)")
    p.add_argument("--load-dir", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--stage", type=int, default=1)
    p.add_argument("--result", required=True)
    a = p.parse_args()

    manifest = json.load(open(os.path.join(a.case, "manifest.json")))
    megatron = "key_map" in manifest  # a Megatron torch_dist fixture (GPTModel) rather than a DCP one
    moe = "experts.w1" in manifest.get("param_shapes", {})
    if not megatron:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(a.case)), "generator"))
        import models  # the fixture's generator models
        var = models.Variant(**manifest["variant_params"])

    import deepspeed
    deepspeed.init_distributed(dist_backend="gloo")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    cfg = dsr.ds_config(a.stage, False, 1, world, False)
    if moe or megatron:  # every rank trains on the same full batch
        cfg.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1, train_batch_size=world)

    def build():
        if megatron:  # Megatron's own GPTModel at TP 1 (its parameter names are the fixture's)
            import megatron_load
            return megatron_load.build_gpt(os.path.abspath(a.case), 1)[0]
        if not moe:
            return models.make_tinylm(var)
        m = models.make_tinymoe(var)
        m.forward = types.MethodType(moe_loss, m)
        return m

    if a.stage == 3:
        with deepspeed.zero.Init(config_dict_or_path=cfg):
            model = build()
    else:
        model = build()
    groups = megatron_groups(model) if megatron else dsr.param_groups(model)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=cfg)
    t = dict(tp=1, tp_group=None, dp=world, dp_rank=rank)
    res = {"case": os.path.basename(os.path.normpath(a.case)), "stage": a.stage, "world": world,
           "optimizer_class": type(engine.optimizer).__name__}

    def dump():
        dsr.write_result(res, a.result, rank)

    if not dsr.load_universal(engine, a.load_dir, a.tag, res):
        dump()
        return
    res["global_steps"] = engine.global_steps

    from safetensors.torch import load_file
    exp = load_file(os.path.join(a.case, "expected.safetensors"))
    try:
        state = dsr.gather_full_state(engine, t)
        mism = [k for k, e in exp.items() if state.get(k) is None or not torch.equal(state[k], e)]
        res["b_loaded_equals_expected_bitwise"] = not mism
        res["b_compared"] = len(exp)
        res["b_mismatching_keys"] = mism
    except BaseException as e:
        res["b_loaded_equals_expected_bitwise"] = False
        res["b_error"] = f"{type(e).__name__}: {e}"
        res["load_traceback_tail"] = traceback.format_exc()[-4000:]

    try:
        if megatron:
            res["c_skipped"] = "Megatron: load and state only (no training step here)"
        else:
            if moe:
                x, y = models.moe_batch(4, var)
                loss = engine(x, y)
                engine.backward(loss)
                engine.step()
                loss4 = loss.item()
            else:
                loss4 = dsr.train_step(engine, 4, t)
            res["c_loss_step4"] = loss4
            res["c_loss_step4_fixture"] = manifest.get("loss_step4_original")
    except BaseException as e:
        res["c_error"] = f"{type(e).__name__}: {e}"
        res["load_traceback_tail"] = traceback.format_exc()[-4000:]
    dump()
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
