#!/usr/bin/env python3
"""Black-box mutation fuzz of the `uc` binary over real checkpoints of every family.

    python3 scripts/fuzz_cli.py [--uc target/release/uc] [--iterations 300] [--seed 1]

Each iteration copies one fixture checkpoint (DeepSpeed ZeRO / TP / PP / AutoEP / MoE, DCP, Megatron),
mutates one of its files (bit flips, byte runs, truncation, extension, zeroed ranges, a deleted file),
then runs `uc convert` (native, deepspeed, dcp), `uc export`, `uc inspect` and `uc verify` on it with a
time limit. A finding is a panic (exit 101), a signal, a hang, an exit code other than 0/1, an error
without `error:`, or a failed command that left its output (or a temporary sibling) behind; a
conversion that succeeds must also pass `uc verify`. Exits 1 when anything was found; the
offending inputs are kept under --keep.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("UC_SHARED", ROOT.parent / "shared")) / "fixtures"

CASES = [
    "deepspeed/zero1", "deepspeed/zero2", "deepspeed/zero3", "deepspeed/bf16_zero1",
    "deepspeed/tp2_zero1", "deepspeed/tp2_dp2_zero2_bf16", "deepspeed/pp2_zero1",
    "deepspeed/pp2_dp2_tied_zero1", "deepspeed/ep2_zero2", "deepspeed/ep2_zero3",
    "deepspeed/moe_ep2_zero2", "deepspeed/moe_ep2_nozero", "deepspeed/ep2_tp2_zero1",
    "dcp/fsdp2_dp2", "dcp/fsdp2_tp_2x2", "dcp/ep_mesh_empty_shard",
    "megatron/gpt_tp2", "megatron/gpt_tp2_swiglu_tied",
]


def input_dir(case: str) -> Path:
    """The folder `uc` reads for a case: DeepSpeed's (with `latest`) or the DCP checkpoint folder."""
    base = FIXTURES / case
    return base / "checkpoint" if (base / "checkpoint").is_dir() else base


def copy_case(case: str, dst: Path) -> Path:
    src = input_dir(case)
    ignore = shutil.ignore_patterns("*_universal", "expected.safetensors", "generator")
    shutil.copytree(src, dst, ignore=ignore)
    for p in dst.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    return dst


def mutate(rng: random.Random, root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in ("STRUCTURE.txt", "manifest.json"))
    f = rng.choice(files)
    data = bytearray(f.read_bytes())
    kind = rng.choice(["flip", "flip", "run", "truncate", "extend", "zero", "delete", "header"])
    rel = f.relative_to(root)
    if kind == "delete":
        f.unlink()
        return f"delete {rel}"
    if not data:
        data = bytearray(b"\0")
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == "header":
        # Mutate near the start or the end, where pickles and zip directories live.
        end = rng.random() < 0.5
        lo = max(0, len(data) - 512) if end else 0
        hi = len(data) if end else min(len(data), 512)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(lo, hi)] = rng.randrange(256)
    elif kind == "run":
        i = rng.randrange(len(data))
        n = rng.randint(1, 64)
        data[i:i + n] = bytes(rng.randrange(256) for _ in range(n))
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    elif kind == "zero":
        i = rng.randrange(len(data))
        n = rng.randint(1, 4096)
        data[i:i + n] = bytes(len(data[i:i + n]))
    f.write_bytes(bytes(data))
    return f"{kind} {rel}"


def leftovers(out: Path):
    """The output and any temporary sibling of it."""
    found = [p for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}.")]
    return found


def run(uc: str, args, timeout: int):
    try:
        p = subprocess.run([uc, *args], capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return "timeout", ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uc", default=str(ROOT / "target/release/uc"))
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--keep", default="/tmp/uc-fuzz-cli-findings")
    a = ap.parse_args()
    if not FIXTURES.is_dir():
        print(f"no fixtures at {FIXTURES}", file=sys.stderr)
        return 2
    rng = random.Random(a.seed)
    findings = 0
    stats = {}
    for it in range(a.iterations):
        case = rng.choice(CASES)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ck = copy_case(case, tmp / "in")
            what = mutate(rng, ck)
            outs = tmp / "outs"
            outs.mkdir()
            commands = [
                ("convert-native", ["convert", str(ck), str(outs / "native"), "--format", "native", "--threads", "2"], outs / "native"),
                ("convert-deepspeed", ["convert", str(ck), str(outs / "ds"), "--format", "deepspeed"], outs / "ds"),
                ("convert-dcp", ["convert", str(ck), str(outs / "dcp"), "--format", "dcp"], outs / "dcp"),
                ("export", ["export", str(ck), str(outs / "hf")], outs / "hf"),
                ("inspect", ["inspect", "--json", str(ck)], None),
                ("verify", ["verify", str(ck)], None),
            ]
            for name, args, out in commands:
                code, err = run(a.uc, args, a.timeout)
                stats[(name, code)] = stats.get((name, code), 0) + 1
                bad = None
                if code == "timeout":
                    bad = "hang"
                elif code not in (0, 1):
                    bad = f"exit {code}"
                elif code == 1 and "error" not in err:
                    bad = "exit 1 without an error message"
                elif out is not None and code != 0 and leftovers(out):
                    bad = f"left {[p.name for p in leftovers(out)]}"
                elif out is not None and code == 0 and name.startswith("convert") and name != "convert-deepspeed":
                    vcode, verr = run(a.uc, ["verify", str(out)], a.timeout)
                    if vcode != 0:
                        bad = f"converted output fails verify: {verr.strip()[:200]}"
                if bad:
                    findings += 1
                    keep = Path(a.keep) / f"{it:05d}-{name}"
                    shutil.rmtree(keep, ignore_errors=True)
                    shutil.copytree(ck, keep)
                    print(f"FINDING {it} {case} [{what}] {name}: {bad}\n  {err.strip()[-300:]}\n  kept in {keep}")
        if (it + 1) % 50 == 0:
            print(f"{it + 1} iterations, {findings} findings", flush=True)
    summary = ", ".join(f"{n} {c}: {k}" for (n, c), k in sorted(stats.items(), key=str))
    print(f"{a.iterations} mutated checkpoints × {len(commands)} commands: {findings} findings ({summary})")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
