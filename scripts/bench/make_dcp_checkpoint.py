"""Writes a real ~0.55 GB PyTorch DCP checkpoint for benchmarks: FSDP2 (`fully_shard`) over 2 CPU ranks
(gloo), AdamW after one step, saved by `dcp.save({"model": msd, "optim": osd})` from `get_state_dict`.

Run under torchrun (see make_dcp_checkpoint.sh). Every byte is written by torch's own DCP writer.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard


class Net(nn.Module):

    def __init__(self, vocab, hidden, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab // 2, bias=False)

    def forward(self, idx):
        x = self.embed(idx)
        for l in self.layers:
            x = x + torch.tanh(l(x))
        return self.head(self.norm(x)).float().logsumexp(-1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=20)
    a = ap.parse_args()
    dist.init_process_group("gloo")
    torch.manual_seed(1234)
    mesh = init_device_mesh("cpu", (dist.get_world_size(), ), mesh_dim_names=("dp", ))
    model = Net(a.vocab, a.hidden, a.layers)
    for l in model.layers:
        fully_shard(l, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    idx = torch.randint(0, a.vocab, (2, 16), generator=torch.Generator().manual_seed(dist.get_rank()))
    model(idx).backward()
    opt.step()
    msd, osd = get_state_dict(model, opt)
    t = time.time()
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(a.out, "checkpoint"))
    if dist.get_rank() == 0:
        n = sum(p.numel() for p in model.parameters())
        info = {"params": n, "save_seconds": time.time() - t, "world": dist.get_world_size(), "torch": torch.__version__,
                **vars(a)}
        json.dump(info, open(os.path.join(a.out, "bench_info.json"), "w"), indent=1)
        print(f"params={n} saved in {info['save_seconds']:.1f} s")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
