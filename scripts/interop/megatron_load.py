#!/usr/bin/env python
"""Load a `uc convert --format torch_dist` checkpoint with real megatron-core (0.16.1) and check it.

Run under torchrun (CPU, gloo), one process per rank of the READER's tensor parallel size:

  torchrun --nproc_per_node TP megatron_load.py --case <fixtures/megatron/<case>> --ckpt DIR --result out.json

Builds the fixture's GPTModel (manifest.json `model`) at TP = world size with Megatron's FP32Optimizer over
torch AdamW and its parameter groups, exactly as the fixture generator's TP=1 check does
(fixtures/megatron/generator/check_impl.py, whose CPU shims in generator/common.py are reused), then
  dist_checkpointing.load({'model': model.sharded_state_dict(), 'optimizer': optimizer.sharded_state_dict(...,
  is_loading=True)}, DIR) -> model.load_state_dict, optimizer.load_state_dict, scheduler.load_state_dict
and checks (a) the load succeeds, (b) every parameter and both Adam moments, gathered over TP with the
generator's partition rules, equal expected.safetensors bit for bit, (c) the Adam step, iteration and the param
groups' lr / weight decay came back. Writes a JSON result (rank 0) and never raises on a load error.
megatron_load.sh drives it.
"""
import argparse
import json
import os
import sys
import traceback
import warnings

warnings.filterwarnings("ignore")
import torch
import torch.distributed as dist


def gather(name, local, tp, rule):
    """The TP1 tensor of a TP-local one (the generator's partition_rule: 0, 1, None, 'swiglu')."""
    if tp == 1 or rule is None:
        return local
    parts = [torch.empty_like(local) for _ in range(tp)]
    dist.all_gather(parts, local.contiguous())
    if rule == "swiglu":  # local = [gate_t; up_t]
        halves = [p.chunk(2, dim=0) for p in parts]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(parts, dim=rule)


def build_gpt(case, tp):
    """The fixture's GPTModel (manifest.json `model`) at tensor parallel size `tp`, built as the generator builds it
    (its CPU shims installed, model parallel state initialised on the default process group). Returns the model,
    the generator's `common` module and the argument namespace its helpers take."""
    sys.path.insert(0, os.path.join(os.path.dirname(case), "generator"))
    import common  # the fixture generator's config, rules and CPU shims
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import random as mrandom
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    m = json.load(open(os.path.join(case, "manifest.json")))["model"]
    args = argparse.Namespace(layers=m["layers"], hidden=m["hidden"], heads=m["heads"], groups=m["query_groups"],
                              ffn=m["ffn"], no_bias=not m["bias"], swiglu=m["swiglu"],
                              rmsnorm="RMSNorm" in m["spec"], tied=m["tied_embeddings"])
    common.install_cpu_shims()
    ps.initialize_model_parallel(tensor_model_parallel_size=tp)
    mrandom.initialize_rng_tracker(inference_rng_tracker=True)
    torch.manual_seed(m["seed"])
    model = GPTModel(common.build_config(args, tp),
                     get_gpt_layer_local_spec(normalization="RMSNorm" if args.rmsnorm else "LayerNorm"),
                     vocab_size=m["padded_vocab"], max_sequence_length=m["seq"],
                     position_embedding_type="learned_absolute", share_embeddings_and_output_weights=args.tied)
    return model, common, args


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--result", required=True)
    a = p.parse_args()
    case = os.path.abspath(a.case)
    dist.init_process_group("gloo")
    tp, rank = dist.get_world_size(), dist.get_rank()
    from megatron.core import dist_checkpointing
    import megatron.core.optimizer as mopt
    from megatron.core.optimizer.optimizer_config import OptimizerConfig
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from safetensors.torch import load_file

    model, common, args = build_gpt(case, tp)
    ocfg = OptimizerConfig(optimizer="adam", lr=1e-2, min_lr=1e-2, weight_decay=0.1, adam_beta1=0.9,
                           adam_beta2=0.95, adam_eps=1e-8, clip_grad=0.0, bf16=False, fp16=False,
                           use_distributed_optimizer=False)
    mopt.FP32Optimizer = common.CPUFP32Optimizer
    optimizer = mopt._get_megatron_optimizer_based_on_param_groups(ocfg, [model],
                                                                   mopt._get_param_groups([model], ocfg, None))
    sched = OptimizerParamScheduler(optimizer, init_lr=1e-2, max_lr=1e-2, min_lr=1e-2, lr_warmup_steps=0,
                                    lr_decay_steps=100, lr_decay_style="constant", start_wd=0.1, end_wd=0.1,
                                    wd_incr_steps=100, wd_incr_style="constant")
    res = {"case": os.path.basename(case), "reader_tp": tp}

    def dump():
        if rank == 0:
            with open(a.result, "w") as f:
                json.dump(res, f, indent=1, default=repr)
            print("LOAD", json.dumps({k: v for k, v in res.items() if k != "traceback"}, default=repr))

    try:
        model_sd = model.sharded_state_dict(metadata={"singleton_local_shards": False})
        opt_sd = optimizer.sharded_state_dict(model_sd, is_loading=True,
                                              metadata={"singleton_local_shards": False,
                                                        "chained_optim_avoid_prefix": True})
        with common.cuda_device_shim():
            loaded = dist_checkpointing.load({"model": model_sd, "optimizer": opt_sd}, a.ckpt)
        model.load_state_dict(loaded["model"])
        optimizer.load_state_dict(loaded["optimizer"])
        sched.load_state_dict(loaded["opt_param_scheduler"])
        res["a_loaded"] = True
    except BaseException as e:
        res["a_loaded"] = False
        res["load_error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
        dump()
        return

    exp = load_file(os.path.join(case, "expected.safetensors"))
    mism, n = [], 0
    for name, prm in model.named_parameters():
        st = optimizer.optimizer.state[prm]
        rule = common.partition_rule(name, swiglu=args.swiglu)
        for key, local in (("fp32", prm.data), ("exp_avg", st["exp_avg"]), ("exp_avg_sq", st["exp_avg_sq"])):
            full = gather(name, local, tp, rule)
            n += 1
            if not torch.equal(full, exp[f"{name}/{key}"]):
                mism.append(f"{name}/{key}")
    res["b_compared"] = n
    res["b_expected"] = len(exp)
    res["b_bitwise"] = not mism and n == len(exp)
    res["b_mismatching"] = mism
    steps = sorted({float(optimizer.optimizer.state[q]["step"]) for q in model.parameters()})
    groups = [(g["lr"], g["weight_decay"]) for g in optimizer.optimizer.param_groups]
    res["c_adam_step"] = steps
    res["c_iteration"] = loaded.get("iteration")
    res["c_param_groups_lr_wd"] = groups
    res["c_ok"] = steps == [3.0] and loaded.get("iteration") == 3 and groups == [(0.01, 0.1), (0.01, 0.0)]
    dump()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
