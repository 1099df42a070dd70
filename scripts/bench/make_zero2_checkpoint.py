#!/usr/bin/env python
"""Write a real, benchmark-sized DeepSpeed ZeRO-1/2 checkpoint (CPU, gloo, dp = world size).

Run under torchrun (make_zero2_checkpoint.sh does that):
    torchrun --nproc_per_node 2 make_zero2_checkpoint.py --out DIR [--stage 2] [--bf16]

A small decoder-only LM (embedding, pre-LN blocks with fused GQA-style qkv, GELU MLP, untied lm_head) is
trained for --steps optimizer steps with DeepSpeed ZeRO (torch AdamW, two param groups), then saved with
engine.save_checkpoint(DIR, tag=f"global_step{steps}"). Every byte on disk is written by DeepSpeed.

Size on disk (fp32, ZeRO-1/2): ~4 B/param in mp_rank_00_model_states.pt + ~12 B/param over the
zero_pp_rank_*_optim_states.pt files (fp32 master + exp_avg + exp_avg_sq) = ~16 B/param.
bf16: ~2 B/param model states + the same 12 B/param optimizer states.
The defaults (hidden 768, 4 layers, vocab 8192) give ~38.6M params = ~0.62 GB fp32.
"""
import argparse
import json
import os
import time

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("DS_BUILD_OPS", "0")

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):

    def __init__(self, hidden, n_heads, n_kv_heads, mlp):
        super().__init__()
        self.hd = hidden // n_heads
        self.nq, self.nkv = n_heads, n_kv_heads
        self.q, self.kv = n_heads * self.hd, n_kv_heads * self.hd
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, self.q + 2 * self.kv)
        self.o_proj = nn.Linear(self.q, hidden, bias=False)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, mlp)
        self.fc2 = nn.Linear(mlp, hidden)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split([self.q, self.kv, self.kv], dim=-1)
        q = q.view(b, t, self.nq, self.hd).transpose(1, 2)
        k = k.view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = v.view(b, t, self.nkv, self.hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, self.q))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class BenchLM(nn.Module):

    def __init__(self, vocab, hidden, layers, n_heads, n_kv_heads, mlp):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList([Block(hidden, n_heads, n_kv_heads, mlp) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        # numel-1 parameter: makes the total numel odd, so the dp flat partitions need padding
        self.logit_scale = nn.Parameter(torch.ones(1))

    def forward(self, idx, targets):
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x)) * self.logit_scale
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


class ManyTensorsLM(nn.Module):
    """--many-blocks N: N blocks of LayerNorm(w) + Linear(w, w), 4 small tensors each (like the
    thousands of experts of an MoE model): a checkpoint of many small tensors, little data."""

    def __init__(self, vocab, blocks, width=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
                                     for _ in range(blocks)])

    def forward(self, idx, targets):
        x = self.embed(idx)
        for blk in self.blocks:
            x = x + blk(x)
        logits = x @ self.embed.weight.t()
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


def param_groups(model, wd):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


def ds_config(a, dp):
    cfg = {
        "train_batch_size": a.micro_bs * dp,
        "train_micro_batch_size_per_gpu": a.micro_bs,
        "gradient_accumulation_steps": 1,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": 1e-3,
                "betas": [0.9, 0.95],
                "eps": 1e-8,
                "weight_decay": 0.1,
                "torch_adam": True,
                "adam_w_mode": True,
            },
        },
        "gradient_clipping": 0.0,
        "zero_optimization": {
            "stage": a.stage,
            "reduce_bucket_size": 2e8,
            "allgather_bucket_size": 2e8,
        },
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1000,
        "wall_clock_breakdown": False,
    }
    if a.bf16:
        cfg["bf16"] = {"enabled": True}
        cfg["data_types"] = {"grad_accum_dtype": "fp32"}
    return cfg


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint root (save_checkpoint's save_dir)")
    p.add_argument("--stage", type=int, choices=[1, 2], default=2)
    p.add_argument("--bf16", action="store_true", help="bf16 weights, fp32 master + moments")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--micro-bs", type=int, default=1)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--many-blocks", type=int, default=0,
                   help="instead of the LM: N blocks of LayerNorm(32) + Linear(32, 32) (4N + 1 tensors)")
    a = p.parse_args()

    import deepspeed
    deepspeed.init_distributed(dist_backend="gloo")
    torch.set_num_threads(1)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    cfg = ds_config(a, world)

    torch.manual_seed(a.seed)
    if a.many_blocks:
        model = ManyTensorsLM(a.vocab, a.many_blocks)
    else:
        model = BenchLM(a.vocab, a.hidden, a.layers, a.heads, a.kv_heads, 4 * a.hidden)
    n_params = sum(p.numel() for p in model.parameters())
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=param_groups(model, 0.1), config=cfg)
    if rank == 0:
        print(f"params={n_params} tensors={len(list(model.parameters()))} "
              f"optimizer={type(engine.optimizer).__name__}", flush=True)

    t0 = time.time()
    losses = []
    for step in range(1, a.steps + 1):
        g = torch.Generator().manual_seed(10_000 * step + rank)
        toks = torch.randint(0, a.vocab, (a.micro_bs, a.seq + 1), generator=g)
        loss = engine(toks[:, :-1], toks[:, 1:])
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    t_train = time.time() - t0

    tag = f"global_step{a.steps}"
    t0 = time.time()
    engine.save_checkpoint(a.out, tag=tag)
    torch.distributed.barrier()
    t_save = time.time() - t0

    if rank == 0:
        info = {
            "tag": tag,
            "params": n_params,
            "world_size": world,
            "zero_stage": a.stage,
            "bf16": a.bf16,
            "steps": a.steps,
            "losses_rank0": losses,
            "model": {k: getattr(a, k) for k in ("hidden", "layers", "vocab", "heads", "kv_heads", "seq", "micro_bs", "seed",
                                                  "many_blocks")},
            "param_shapes": {n: list(p.shape) for n, p in engine.module.named_parameters()},
            "ds_config": cfg,
            "optimizer_class": type(engine.optimizer).__name__,
            "train_seconds": round(t_train, 2),
            "save_seconds": round(t_save, 2),
            "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__},
        }
        with open(os.path.join(a.out, "bench_info.json"), "w") as f:
            json.dump(info, f, indent=1)
        print(f"saved {a.out}/{tag} in {t_save:.1f}s (train {t_train:.1f}s) losses={losses}", flush=True)


if __name__ == "__main__":
    main()
