#!/usr/bin/env python3
"""fuzz_convert.py - mutation fuzzing of the converter's checkpoint reading (scripts/convert.py):
format detection, the restricted unpickler, the legacy / zip / safetensors readers, tensor
gathering and architecture detection, on mutated real checkpoints.

    /usr/bin/python3 tests/fuzz/fuzz_convert.py [SECONDS [SHARED_DIR [ARTIFACT_DIR]]]

Seeds: the published CIFAR-10 ResNet-20 (legacy torch.save), the same weights re-saved as a
zip (torch.save's default) and as safetensors when torch is importable, and a small zip with
an extra pickled dict. Each iteration applies 1-4 mutations (bit flips, interesting bytes,
truncation, chunk deletion / duplication; in a zip, to the data.pkl member, re-zipped so that
the zip CRC does not hide it) and converts the result in memory. Allowed outcomes: success or
ConvertError / MemoryError (one clear line from the CLI). Anything else is a finding: the input
is saved to ARTIFACT_DIR (default build-fuzz/artifacts/convert) and the run fails. So is an
input that raises the process's peak memory by more than MEMORY_GROWTH_KB: a 1 MB checkpoint
must never make the converter allocate gigabytes (finding 2 in README.md). Every global
the unpickler resolves must be on the allow-list (checked by wrapping find_class).
"""
import io
import json
import os
import pickle
import random
import resource
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import convert  # noqa: E402

resolved = []
_find_class = convert.RestrictedUnpickler.find_class


def watched_find_class(self, module, name):
    value = _find_class(self, module, name)   # raises ConvertError for anything not allowed
    resolved.append((module, name))
    return value


convert.RestrictedUnpickler.find_class = watched_find_class


def allowed(module, name):
    return ((module, name) in convert.ALLOWED_GLOBALS or
            (module in ("torch", "torch.storage", "torch.cuda") and name in convert.STORAGE_DTYPES) or
            (module == "torch" and name in convert.TORCH_DTYPES))


def make_seeds(shared):
    legacy_path = os.path.join(shared, "data", "cifar10", "resnet20-12fca82f.th")
    if not os.path.exists(legacy_path):
        sys.exit("fuzz_convert: %s is missing" % legacy_path)
    seeds = {"legacy.th": open(legacy_path, "rb").read()}
    try:
        import torch
    except ImportError:
        print("fuzz_convert: no torch: only the legacy seed")
        return seeds
    sd = torch.load(legacy_path, map_location="cpu")["state_dict"]
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "epoch": 3, "best_prec1": 91.7}, buf)
    seeds["zip.pth"] = buf.getvalue()
    header, blobs, offset = {}, [], 0
    for k, v in sd.items():
        raw = v.detach().contiguous().numpy().tobytes()
        dtype = {"torch.float32": "F32", "torch.int64": "I64"}[str(v.dtype)]
        header[k] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    seeds["model.safetensors"] = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    return seeds


MEMORY_GROWTH_KB = 512 * 1024   # the seeds convert in ~20 MB; a finding once took 15 GB

INTERESTING = [0, 1, 0x7f, 0x80, 0xff, ord("("), ord("c"), ord("q"), ord("."), ord("R")]


def mutate_bytes(rng, data, hot):
    """1-4 mutations; positions mostly in the first `hot` bytes (the pickles, headers)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        pos = rng.randrange(min(hot, len(b))) if rng.random() < 0.8 else rng.randrange(len(b))
        kind = rng.randrange(6)
        if kind == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            b[pos] = rng.choice(INTERESTING)
        elif kind == 2:
            del b[rng.randrange(len(b)):]
        elif kind == 3:
            del b[pos:pos + rng.randint(1, 64)]
        elif kind == 4:
            n = rng.randint(1, 64)
            b[pos:pos] = b[pos:pos + n]
        elif len(b) >= 4:
            struct.pack_into("<I", b, min(pos, len(b) - 4),
                             rng.choice([0, 1, 2 ** 31 - 1, 2 ** 32 - 1, len(b), rng.randrange(2 ** 32)]))
    return bytes(b)


def mutate(rng, name, data):
    if name.endswith(".pth") and rng.random() < 0.7:
        zin = zipfile.ZipFile(io.BytesIO(data))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                member = zin.read(info.filename)
                if info.filename.endswith("data.pkl"):
                    member = mutate_bytes(rng, member, len(member))
                zout.writestr(info.filename, member)
        return out.getvalue()
    hot = 4096 if name.endswith(".safetensors") else 32768
    return mutate_bytes(rng, data, hot)


def crafted_regressions():
    """Minimal inputs of the converter findings in README.md (2: memo index / length claiming
    gigabytes, 3: a zip whose "version needed to extract" is 25.5)."""
    # EMPTY_DICT, then LONG_BINPUT to memo index 671,508,515: the C unpickler would grow its memo
    # array to that size.
    memo_pickle = b"\x80\x02}r" + struct.pack("<I", 671508515) + b"."
    legacy = b"".join(pickle.dumps(v, protocol=2) for v in
                      (convert.LEGACY_MAGIC_NUMBER, convert.LEGACY_PROTOCOL_VERSION, {})) + memo_pickle

    def zipped(member, version_needed=None):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", member)
        b = bytearray(buf.getvalue())
        if version_needed is not None:
            struct.pack_into("<H", b, b.index(b"PK\x01\x02") + 6, version_needed)
        return bytes(b)

    return {"legacy-memo-index.th": legacy, "zip-memo-index.pth": zipped(memo_pickle),
            "zip-version-needed-25.5.pth": zipped(b"\x80\x02}q\x00.", 255)}


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20
    shared = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "..", "shared")
    artifacts = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "build-fuzz", "artifacts", "convert")
    # Past findings first, rebuilt here (no checkpoint-like file is committed): each must now
    # give success or a ConvertError.
    regressions = tempfile.mkdtemp(prefix="fuzz_convert_regressions.")
    for name, data in sorted(crafted_regressions().items()):
        with open(os.path.join(regressions, name), "wb") as f:
            f.write(data)
    for name in sorted(os.listdir(regressions)):
        del resolved[:]
        try:
            convert.convert(convert.parse_args([os.path.join(regressions, name), "-o", os.devnull]))
        except (convert.ConvertError, MemoryError):
            pass
        except Exception:
            print("FINDING again: crafted regression %s" % name)
            traceback.print_exc(limit=4)
            return 1
    shutil.rmtree(regressions)
    seeds = make_seeds(shared)
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "1")))
    work = tempfile.mkdtemp(prefix="fuzz_convert.")
    outcomes = {"ok": 0, "refused": 0}
    findings = 0
    start = time.time()
    iterations = 0
    slowest = [0.0, ""]
    while time.time() - start < seconds:
        name = rng.choice(sorted(seeds))
        data = mutate(rng, name, seeds[name])
        path = os.path.join(work, name)
        with open(path, "wb") as f:
            f.write(data)
        del resolved[:]
        iterations += 1
        began = time.time()
        try:
            convert.convert(convert.parse_args([path, "-o", os.path.join(work, "out.cnn")]))
            outcomes["ok"] += 1
        except (convert.ConvertError, MemoryError):
            outcomes["refused"] += 1
        except Exception:
            findings += 1
            os.makedirs(artifacts, exist_ok=True)
            saved = os.path.join(artifacts, "crash-%d-%s" % (iterations, name))
            with open(saved, "wb") as f:
                f.write(data)
            print("FINDING (input saved to %s):" % saved)
            traceback.print_exc(limit=4)
        took = time.time() - began
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if iterations == 1:
            first_peak_kb = peak_kb
        elif peak_kb > first_peak_kb + MEMORY_GROWTH_KB:
            findings += 1
            os.makedirs(artifacts, exist_ok=True)
            saved = os.path.join(artifacts, "memory-%d-%s" % (iterations, name))
            with open(saved, "wb") as f:
                f.write(data)
            print("FINDING: peak memory grew to %d MB on this input (saved to %s)" % (peak_kb >> 10, saved))
            first_peak_kb = peak_kb   # report each new high once
        if took > slowest[0]:
            slowest[:] = [took, name]
            if took > 10:   # wall time: on a loaded machine this may be starvation, not a bug
                os.makedirs(artifacts, exist_ok=True)
                with open(os.path.join(artifacts, "slow-unit-%s" % name), "wb") as f:
                    f.write(data)
        bad = [g for g in resolved if not allowed(*g)]
        if bad:
            findings += 1
            print("FINDING: globals outside the allow-list were resolved: %s" % bad)
    shutil.rmtree(work)
    print("fuzz_convert: %d executions in %.0f s: %d converted, %d refused with a clear error, "
          "%d findings; slowest input %.1f s (%s)" % (iterations, time.time() - start, outcomes["ok"],
                                                   outcomes["refused"], findings, slowest[0], slowest[1]))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
