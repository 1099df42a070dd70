"""Opens a unicheck native checkpoint with Python's `safetensors.safe_open` (no unicheck code) and checks it
against its uc.json: every tensor found under its key with the manifest's dtype, shape and byte range, and
every file's sha256. Usage: python3 check_native.py <checkpoint dir>
Produce one with: UC_INTEROP_DIR=/tmp/interop cargo test -p uc-store --test native interop_outputs
"""
import hashlib
import json
import os
import sys

from safetensors import safe_open

try:
    import torch  # noqa: F401  (bf16 needs the torch backend; numpy has no bfloat16)
    FRAMEWORK = "pt"
except ImportError:
    FRAMEWORK = "numpy"


def main(root):
    assert os.path.isfile(os.path.join(root, "COMPLETE")), "no COMPLETE marker"
    with open(os.path.join(root, "uc.json"), "rb") as f:
        raw = f.read()
    marker = open(os.path.join(root, "COMPLETE")).read().strip()
    assert marker == "sha256:" + hashlib.sha256(raw).hexdigest(), "COMPLETE does not hold uc.json's sha256"
    manifest = json.loads(raw)
    for fs in manifest["files"]:
        path = os.path.join(root, fs["file"])
        data = open(path, "rb").read()
        assert len(data) == fs["bytes"], (path, len(data), fs["bytes"])
        assert fs["checksum"] == "sha256:" + hashlib.sha256(data).hexdigest(), path
    checked = skipped = 0
    for entry in manifest["tensors"]:
        meta, st = entry["meta"], entry["storage"]
        path = os.path.join(root, st["file"])
        raw_bytes = open(path, "rb").read()[st["start"]:st["end"]]
        with safe_open(path, framework=FRAMEWORK) as f:
            assert st["key"] in f.keys(), (st["key"], list(f.keys()))
            if FRAMEWORK == "numpy" and meta["dtype"] == "BF16":
                skipped += 1
                continue
            t = f.get_tensor(st["key"])
            assert list(t.shape) == meta["shape"], (st["key"], t.shape, meta["shape"])
            if FRAMEWORK == "pt":
                b = t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes() if t.numel() else b""
            else:
                b = t.tobytes()
            assert b == raw_bytes, st["key"]
            sl = f.get_slice(st["key"])
            assert sl.get_dtype() == meta["dtype"], (st["key"], sl.get_dtype(), meta["dtype"])
            checked += 1
    print(f"OK: {checked} tensors in {len(manifest['files'])} files read with safetensors.safe_open "
          f"(framework={FRAMEWORK}), {skipped} skipped; checksums match")


if __name__ == "__main__":
    main(sys.argv[1])
