#!/usr/bin/env python
"""A tiny real DeepSpeed checkpoint with what the shared fixtures lack: a frozen parameter and buffers.

Run under torchrun (CPU, gloo), e.g. via compare_frozen_buffers.sh:
    torchrun --nproc_per_node 2 make_frozen_buffer_checkpoint.py --out DIR --stage 2 [--bf16]

Model: embedding + one linear (trained), `frozen.weight` and `odd` [7] (requires_grad=False), a persistent float32 buffer
`scale`, a persistent int64 buffer `counter` and a non-persistent buffer `scratch` (not in state_dict).
One AdamW step, then engine.save_checkpoint(DIR, tag="global_step1").
"""
import argparse
import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("DS_BUILD_OPS", "0")

import torch
import torch.nn as nn


class Tiny(nn.Module):

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, 24)
        self.frozen = nn.Linear(24, 24, bias=False)
        self.frozen.weight.requires_grad_(False)
        self.odd = nn.Parameter(torch.linspace(-1, 1, 7), requires_grad=False)  # numel not divisible by dp
        self.head = nn.Linear(24, 64)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 24))
        self.register_buffer("counter", torch.arange(5, dtype=torch.int64))
        self.register_buffer("scratch", torch.ones(3), persistent=False)

    def forward(self, x):
        h = self.frozen(self.embed(x)) * self.scale.to(self.embed.weight.dtype) + self.odd.sum()
        return self.head(h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage", type=int, default=2)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    import deepspeed
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(7)
    model = Tiny()
    cfg = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": a.stage},
        "bf16": {"enabled": a.bf16},
        "zero_allow_untested_optimizer": True,
    }
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    torch.manual_seed(100 + engine.global_rank)
    x = torch.randint(0, 64, (2, 8))
    out = engine(x)
    loss = nn.functional.cross_entropy(out.float().reshape(-1, 64), x.reshape(-1))
    engine.backward(loss)
    engine.step()
    engine.save_checkpoint(a.out, tag="global_step1")
    if engine.global_rank == 0:
        print("saved", a.out)


if __name__ == "__main__":
    main()
