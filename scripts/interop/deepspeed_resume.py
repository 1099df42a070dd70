#!/usr/bin/env python
"""Resume real DeepSpeed (``"checkpoint": {"load_universal": true}``) from a universal checkpoint folder
and check it against the fixture it came from.

Run under torchrun (CPU, gloo, 127.0.0.1). One process per rank:

  torchrun --nproc_per_node N deepspeed_resume.py --fixture <fixtures/deepspeed/<case>> \
      --load-dir <dir holding latest_universal + global_step3_universal> [--tp T | --ep E] --result out.json

It builds the same model, optimizer and data as the fixture generators
(fixtures/deepspeed/generator/make_fixtures.py for the ZeRO cases, generator/autotp/make_autotp_fixtures.py for
the AutoTP ones, generator/autoep/make_autoep_fixtures.py for AutoEP, which needs transformers==5.22.2; the
TinyLM, AutoTP specs and TP reassembly are imported from unicheck's own fixture generator
tests/fixtures/generator/make_fixtures.py, which matches the shared ones), calls ``engine.load_checkpoint(dir,
tag="global_step3_universal")`` and checks
  (a) the load succeeds (the exception and traceback tail are recorded otherwise),
  (b) full fp32 params and Adam exp_avg / exp_avg_sq after the load equal the fixture's expected.safetensors
      bit for bit (gathered with DeepSpeed's safe_get_full_* APIs, after the optimizer-state re-link the
      generators use),
  (c) the loss of step 4 equals the resumed step-4 loss recorded in the fixture's manifest.json for this
      topology (dp=1 with gradient_accumulation_steps=2 for the ZeRO cases; tp<T>_dp<D> for AutoTP;
      ep<E>_dp<D> for AutoEP).
With --save-state4 it also saves the full fp32/exp_avg/exp_avg_sq after step 4, so the driver can check that
resuming from uc's folder and from DeepSpeed's own universal folder continue identically (same machine).
Writes a JSON result (rank 0) and never raises on a load error, so a driver can report every case.
deepspeed_resume.sh drives it (uc convert + this + DeepSpeed's own universal folder as a control).
"""
import argparse
import json
import os
import sys
import traceback

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("DS_BUILD_OPS", "0")

import torch
import torch.nn.functional as F

SEQ = 8
MICRO_BS = 2
GLOBAL_BS = 4  # = MICRO_BS * dp * gas for every topology used here
LR = 1e-2
STEPS = 3
SEED = 1234


# ---------------------------------------------------------------------------------------------------------
# The ZeRO and AutoTP fixtures' model: unicheck's fixture generator's TinyLM (tests/fixtures/generator), which has
# the shared generators' parameter names, init order, seed and math (with AutoTP's embedding gather), and its
# AutoTP layer specs and TP reassembly rules.
# ---------------------------------------------------------------------------------------------------------
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures",
                                "generator"))
from make_fixtures import VOCAB, TinyLM, tp_layer_specs  # noqa: E402
from make_fixtures import reassemble as tp_reassemble  # noqa: E402


# ---------------------------------------------------------------------------------------------------------
# AutoEP fixtures' model (copied from generator/autoep/make_autoep_fixtures.py, variant "main"): a tiny HF
# MixtralForCausalLM built in code (needs transformers==5.22.2), replaced by DeepSpeed AutoEP ("mixtral").
# ---------------------------------------------------------------------------------------------------------
EP_V = dict(seed=1234, vocab=48, hidden=32, ffn=16, layers=2, heads=4, kv_heads=2, head_dim=8, experts=4, top_k=2)


def build_hf_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM
    V = EP_V
    cfg = MixtralConfig(vocab_size=V["vocab"], hidden_size=V["hidden"], intermediate_size=V["ffn"],
                        num_hidden_layers=V["layers"], num_attention_heads=V["heads"],
                        num_key_value_heads=V["kv_heads"], head_dim=V["head_dim"], num_local_experts=V["experts"],
                        num_experts_per_tok=V["top_k"], max_position_embeddings=64, tie_word_embeddings=False,
                        router_jitter_noise=0.0, attention_dropout=0.0, output_router_logits=False, use_cache=False,
                        attn_implementation="eager")
    torch.manual_seed(V["seed"])
    return MixtralForCausalLM(cfg).float()


def ep_gather(p, local):
    """all_gather an expert-local tensor [E_local, ...] over the EP group, placed at its global expert ids."""
    from deepspeed.utils import groups
    meta = getattr(p, "ds_autoep_uc_meta")
    grp = groups._get_expert_parallel_group(p.group_name)
    objs = [None] * torch.distributed.get_world_size(grp)
    torch.distributed.all_gather_object(objs, (list(meta["local_experts"]), local), group=grp)
    full = torch.full(list(meta["logical_shape"]), float("nan"), dtype=torch.float32)
    for experts, t in objs:
        for i, e in enumerate(experts):
            full[e] = t[i]
    return full.contiguous()


# ---------------------------------------------------------------------------------------------------------
# Shared: config, data, step, gather
# ---------------------------------------------------------------------------------------------------------
def param_groups(model, wd=0.1, named=False):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        ndim = len(p.ds_shape) if hasattr(p, "ds_shape") else p.dim()
        (decay if ndim >= 2 else no_decay).append(p)
    if named:  # AutoEP: 'name' is required by split_params_into_different_moe_groups_for_optimizer
        return [{"name": "decay", "params": decay, "weight_decay": wd},
                {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def global_batch(step, vocab=VOCAB):
    g = torch.Generator().manual_seed(10_000 + step)
    toks = torch.randint(0, vocab, (GLOBAL_BS, SEQ + 1), generator=g)
    return toks[:, :-1].contiguous(), toks[:, 1:].contiguous()


def ds_config(stage, bf16, tp, dp, autotp_model, ep=0):
    cfg = {
        "train_micro_batch_size_per_gpu": MICRO_BS,
        "gradient_accumulation_steps": GLOBAL_BS // (MICRO_BS * dp),
        "optimizer": {"type": "AdamW",
                      "params": {"lr": LR, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1,
                                 "torch_adam": True, "adam_w_mode": True}},
        "gradient_clipping": 0.0,
        "zero_optimization": {"stage": stage, "reduce_bucket_size": 5e7, "allgather_bucket_size": 5e7},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1000,
        "wall_clock_breakdown": False,
        "checkpoint": {"load_universal": True},
    }
    if not autotp_model:
        cfg["train_batch_size"] = GLOBAL_BS  # the ZeRO generator sets it; AutoTP's omits it (see there)
    if stage == 3:
        cfg["zero_optimization"].update({"stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": 1e6})
    if tp > 1:
        cfg["tensor_parallel"] = {"autotp_size": tp,
                                  "partition_config": {"use_default_specs": False, "layer_specs": tp_layer_specs()}}
    if ep:
        cfg["expert_parallel"] = {"enabled": True, "autoep_size": ep, "preset_model": "mixtral",
                                  "use_grouped_mm": False}
    if bf16:
        cfg["bf16"] = {"enabled": True}
        cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    return cfg


def make_engine(deepspeed, cfg, autotp_model, autoep_model=False):
    torch.manual_seed(SEED)
    if autoep_model:
        model = build_hf_mixtral()
        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, named=True),
                                               config=cfg)
        return engine
    if autotp_model:
        model = TinyLM()
    elif cfg["zero_optimization"]["stage"] == 3:
        with deepspeed.zero.Init(config_dict_or_path=cfg):
            torch.manual_seed(SEED)
            model = TinyLM()
    else:
        model = TinyLM()
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model), config=cfg)
    return engine


def topo(engine):
    from deepspeed.utils import groups
    dist = torch.distributed
    if engine.autotp_size() > 1:
        tpg = groups.get_tensor_model_parallel_group()
        return dict(tp=dist.get_world_size(tpg), tp_group=tpg, dp=engine.dp_world_size,
                    dp_rank=dist.get_rank(groups._get_data_parallel_group()))
    return dict(tp=1, tp_group=None, dp=dist.get_world_size(), dp_rank=dist.get_rank())


def train_step(engine, step, t):
    x, y = global_batch(step, EP_V["vocab"] if t.get("hf") else VOCAB)
    losses = []
    for m in range(engine.gradient_accumulation_steps()):
        lo = (m * t["dp"] + t["dp_rank"]) * MICRO_BS  # [micro m][dp rank r]
        if t.get("hf"):  # AutoEP generator: HF model, loss computed outside
            out = engine(input_ids=x[lo:lo + MICRO_BS], use_cache=False)
            logits = out.logits if hasattr(out, "logits") else out[0]
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y[lo:lo + MICRO_BS].reshape(-1))
        else:
            loss = engine(x[lo:lo + MICRO_BS], y[lo:lo + MICRO_BS])
        engine.backward(loss)
        engine.step()
        losses.append(loss.detach().float())
    tt = torch.stack(losses).mean().clone()
    torch.distributed.all_reduce(tt)
    return (tt / torch.distributed.get_world_size()).item()


def gather_full_state(engine, t):
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
    opt = engine.optimizer
    # DeepSpeed 0.19.8: optimizer-state views of groups > 0 are linked lazily right after stepping group 0
    # ("exp_avg not found in optimizer state fragment"); re-link as the generators do.
    if hasattr(opt, "_hp_optimizer_states_linked") and hasattr(opt, "_lazy_init_hp_params_optimizer_state"):
        opt._hp_optimizer_states_linked = False
        opt._lazy_init_hp_params_optimizer_state()
    out = {}
    for n, p in engine.module.named_parameters():
        for st, local in (("fp32", safe_get_full_fp32_param(p)), ("exp_avg", safe_get_full_optimizer_state(p, "exp_avg")),
                          ("exp_avg_sq", safe_get_full_optimizer_state(p, "exp_avg_sq"))):
            if local is None:
                out[f"{n}/{st}"] = None
                continue
            local = local.detach().float().cpu().clone().contiguous()
            if getattr(p, "ds_autoep_uc_meta", None) is not None:
                local = ep_gather(p, local)
            elif t["tp"] > 1:
                shards = [None] * t["tp"]
                torch.distributed.all_gather_object(shards, local, group=t["tp_group"])
                local = tp_reassemble(n, shards).contiguous()
            out[f"{n}/{st}"] = local
    return out


def expected_loss4(manifest, tp, dp, ep=0):
    if ep:
        r = manifest.get("resume_from_universal", {}).get(f"ep{ep}_dp{dp}")
        return None if r is None else r.get("loss_step4_resumed")
    if "resume_from_universal_dp1" in manifest:  # ZeRO fixtures: only dp=1 (gas 2) was recorded
        if tp == 1 and dp == 1:
            return manifest["resume_from_universal_dp1"]["loss_step4_resumed"]
        return None
    r = manifest.get("resume_from_universal", {}).get(f"tp{tp}_dp{dp}")
    return None if r is None else r.get("loss_step4_resumed")


def load_universal(engine, load_dir, tag, res):
    """(a): engine.load_checkpoint(load_dir, tag); records `a_loaded`, and DeepSpeed's refusal verbatim
    (`load_error`, `load_traceback_tail`). True when it loaded."""
    try:
        path, _client = engine.load_checkpoint(load_dir, tag=tag)
        if path is None:
            raise RuntimeError("load_checkpoint returned None")
        res["a_loaded"] = True
        return True
    except BaseException as e:
        res["a_loaded"] = False
        res["load_error"] = f"{type(e).__name__}: {e}"
        res["load_traceback_tail"] = traceback.format_exc()[-4000:]
        return False


def write_result(res, path, rank):
    """Rank 0 writes the JSON result and prints it (traceback left out) for the driver's log."""
    if rank == 0:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        print("RESUME", json.dumps({k: v for k, v in res.items() if k != "load_traceback_tail"}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fixture", required=True, help="fixtures/deepspeed/<case> (manifest.json, expected.safetensors)")
    p.add_argument("--load-dir", required=True, help="folder with latest_universal and the tag folder")
    p.add_argument("--tag", default=f"global_step{STEPS}_universal")
    p.add_argument("--tp", type=int, default=1, help="AutoTP size to resume with (AutoTP fixtures)")
    p.add_argument("--ep", type=int, default=1, help="AutoEP size to resume with (AutoEP fixtures)")
    p.add_argument("--result", required=True)
    p.add_argument("--save-state4", default="", help="torch.save the full state after step 4 here (rank 0)")
    a = p.parse_args()

    manifest = json.load(open(os.path.join(a.fixture, "manifest.json")))
    stage, bf16 = int(manifest["zero_stage"]), bool(manifest["bf16"])
    autotp_model = int(manifest.get("tp_size", 1)) > 1
    autoep_model = "autoep_size" in manifest

    import deepspeed
    deepspeed.init_distributed(dist_backend="gloo")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    dp = world // a.tp
    cfg = ds_config(stage, bf16, a.tp, dp, autotp_model, a.ep if autoep_model else 0)
    engine = make_engine(deepspeed, cfg, autotp_model, autoep_model)
    t = topo(engine)
    t["hf"] = autoep_model
    res = {"fixture": os.path.basename(os.path.normpath(a.fixture)), "load_dir": a.load_dir, "tag": a.tag,
           "zero_stage": stage, "bf16": bf16, "resume_tp": a.tp, "resume_ep": a.ep if autoep_model else None,
           "resume_dp": dp,
           "gradient_accumulation_steps": engine.gradient_accumulation_steps(),
           "optimizer_class": type(engine.optimizer).__name__}

    def dump():
        write_result(res, a.result, rank)

    # (a) load
    if not load_universal(engine, a.load_dir, a.tag, res):
        dump()
        return
    # (b) loaded state vs expected
    from safetensors.torch import load_file
    exp = load_file(os.path.join(a.fixture, "expected.safetensors"))
    try:
        state = gather_full_state(engine, t)
        mism, maxdiff = [], 0.0
        for k, e in exp.items():
            s = state.get(k)
            if s is None or s.shape != e.shape:
                mism.append(k)
                maxdiff = float("inf")
            elif not torch.equal(s, e):
                mism.append(k)
                maxdiff = max(maxdiff, (s - e).abs().max().item())
        res["b_loaded_equals_expected_bitwise"] = not mism
        res["b_mismatching_keys"] = mism
        res["b_max_abs_diff"] = maxdiff
    except BaseException as e:
        res["b_loaded_equals_expected_bitwise"] = False
        res["b_error"] = f"{type(e).__name__}: {e}"
        res["load_traceback_tail"] = traceback.format_exc()[-4000:]
    # (c) step 4
    try:
        loss4 = train_step(engine, STEPS + 1, t)
        want = expected_loss4(manifest, a.tp, dp, a.ep if autoep_model else 0)
        res["c_loss_step4"] = loss4
        res["c_loss_step4_manifest"] = want
        res["c_loss_step4_equal"] = (want is not None and loss4 == want)
        res["engine_global_steps_after_step4"] = engine.global_steps
        state4 = gather_full_state(engine, t)  # full state after step 4: the driver compares it with the control's
        if rank == 0 and a.save_state4:
            torch.save(state4, a.save_state4)
            res["state4_file"] = a.save_state4
        res["optimizer_param_groups_after_step4"] = [
            {k: x for k, x in g.items() if k in ("lr", "weight_decay", "betas", "eps", "name")}
            for g in engine.optimizer.optimizer.param_groups]
    except BaseException as e:
        res["c_loss_step4_equal"] = False
        res["c_error"] = f"{type(e).__name__}: {e}"
        res["load_traceback_tail"] = traceback.format_exc()[-4000:]
    dump()
    torch.distributed.barrier()


if __name__ == "__main__":
    main()
