#!/usr/bin/env bash
# cnnscope pack: a model file with its convs' weights prepared for one ISA's kernels
# (engine/prepared.h) gives byte-identical outputs to the plain file, on every ISA this machine
# runs: read in place where the layout is the session's own (every conv), prepared afresh
# where it is not (none). Also: the original tensors and graph are kept byte for byte, packing
# again replaces the prepared tensors instead of adding more, and a prepared tensor of the
# wrong size is refused with a message naming it.
# Models: the CIFAR-10 ResNet-20 of ../shared (plain GEMM convs on 32x32 maps, Winograd on
# 16x16 with 32 channels, the transposed product on 16x16 and 8x8) and the tiny fixture model
# (every op, grouped and strided convs).
set -u
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
SHARED=${SHARED:-../shared}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
checkpoint=$SHARED/data/cifar10/resnet20-12fca82f.th
[ -f "$checkpoint" ] || { echo "FAIL: $checkpoint is missing"; exit 1; }
[ -f "$FIXTURES/tiny_resnet.cnn" ] || python3 tests/make_tiny_model.py "$FIXTURES"
python3 scripts/convert.py "$checkpoint" -o "$tmp/r20.cnn" >/dev/null || { echo "FAIL: convert"; exit 1; }
cp "$FIXTURES/tiny_resnet.cnn" "$tmp/tiny.cnn"
"$PYTHON" -c "
import numpy as np
np.save('$tmp/x_tiny.npy', np.random.RandomState(1).randn(2, 3, 16, 16).astype(np.float32))
np.save('$tmp/x_r20.npy', np.random.RandomState(2).randn(2, 3, 32, 32).astype(np.float32))"
fails=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

isas=()
for isa in scalar avx2 avx512 neon; do
  CNNSCOPE_ISA=$isa "$CNNSCOPE" info "$tmp/tiny.cnn" >/dev/null 2>&1 && isas+=("$isa")
done
echo "ISAs here: ${isas[*]}"
[ ${#isas[@]} -ge 1 ] || fail "no ISA runs"

# The network output (every conv's weights feed it) of MODEL under ISA, into OUT.npy.
logits() {   # logits ISA MODEL INPUT OUT
  local dir=$tmp/dump.$RANDOM
  CNNSCOPE_ISA=$1 "$CNNSCOPE" dump "$2" --input "$3" --layer "$last" --threads 2 -o "$dir" \
    >/dev/null 2>"$dir.err" || { fail "dump $2 ($1): $(cat "$dir.err")"; return; }
  mv "$dir/$last.npy" "$4"
}
# Convs the session reads from the file, from cnnscope bench's line.
in_file() {   # in_file ISA MODEL
  CNNSCOPE_ISA=$1 "$CNNSCOPE" bench "$2" --iters 1 --threads 2 2>/dev/null |
    sed -n 's/^prepared weights: \([0-9]*\) convs.*/\1/p'
}

for model in r20 tiny; do
  last=$("$PYTHON" -c "
import sys; sys.path.insert(0, 'scripts'); import cnnfile
print(cnnfile.read_model('$tmp/$model.cnn')['nodes'][-1][1])")
  convs=$("$PYTHON" -c "
import sys; sys.path.insert(0, 'scripts'); import cnnfile
print(sum(1 for n in cnnfile.read_model('$tmp/$model.cnn')['nodes'] if n[0] == 'conv2d'))")
  for isa in "${isas[@]}"; do
    packed=$tmp/$model.$isa.cnn
    CNNSCOPE_ISA=$isa "$CNNSCOPE" pack "$tmp/$model.cnn" -o "$packed" >"$tmp/pack.out" 2>&1 ||
      { fail "pack $model ($isa): $(cat "$tmp/pack.out")"; continue; }
    n=$(sed -n 's/.*: \([0-9]*\) convs prepared for .*/\1/p' "$tmp/pack.out")
    # Only the grouped conv of the tiny model keeps its stored weights (no prepared form).
    want=$convs; [ "$model" = tiny ] && want=$((convs - 1))
    [ "$n" = "$want" ] || fail "$model ($isa): $n convs prepared, expected $want"
    got=$(in_file "$isa" "$packed")
    [ "$got" = "$n" ] || fail "$model ($isa): the session read $got convs from the file, expected $n"
    logits "$isa" "$tmp/$model.cnn" "$tmp/x_$model.npy" "$tmp/plain.npy"
    logits "$isa" "$packed" "$tmp/x_$model.npy" "$tmp/packed.npy"
    if cmp -s "$tmp/plain.npy" "$tmp/packed.npy"; then echo "ok   $model $isa: packed = plain, byte for byte ($n convs in place)"
    else fail "$model $isa: the packed file's output differs from the plain file's"; fi
    # Every other ISA finds no layout of its own in this file and prepares its weights.
    for other in "${isas[@]}"; do
      [ "$other" = "$isa" ] && continue
      got=$(in_file "$other" "$packed")
      [ "$got" = 0 ] || fail "$model packed for $isa, run on $other: $got convs read from the file, expected 0"
      logits "$other" "$tmp/$model.cnn" "$tmp/x_$model.npy" "$tmp/plain.npy"
      logits "$other" "$packed" "$tmp/x_$model.npy" "$tmp/packed.npy"
      cmp -s "$tmp/plain.npy" "$tmp/packed.npy" || fail "$model packed for $isa, run on $other: output differs"
    done
  done
done
echo "ok   outputs compared on ${#isas[@]} ISA(s)"

# The file itself: originals kept, the meta key, one prepared tensor per conv after a re-pack
# for another ISA, and a prepared tensor of the wrong size refused.
first=${isas[0]}; second=${isas[${#isas[@]}-1]}
CNNSCOPE_ISA=$second "$CNNSCOPE" pack "$tmp/r20.$first.cnn" -o "$tmp/r20.again.cnn" >/dev/null 2>&1 ||
  fail "pack of a packed file"
"$PYTHON" - "$tmp" "$first" "$second" <<'EOF' || fails=$((fails + 1))
import sys
sys.path.insert(0, "scripts")
import cnnfile
tmp, first, second = sys.argv[1:]
plain = cnnfile.read_model(tmp + "/r20.cnn")
packed = cnnfile.read_model(tmp + "/r20.%s.cnn" % first)
again = cnnfile.read_model(tmp + "/r20.again.cnn")
bad = []
if packed["nodes"] != plain["nodes"]:
    bad.append("the graph changed")
for name, (dims, data) in plain["tensors"].items():
    if packed["tensors"].get(name) != (dims, data):
        bad.append("tensor %s changed" % name)
convs = [n[1] for n in plain["nodes"] if n[0] == "conv2d"]
for model, isa in ((packed, first), (again, second)):
    layout = model["meta"].get("prepared", "")
    if ": %s," % isa not in layout:
        bad.append("meta 'prepared' is %r, expected the layout of %s" % (layout, isa))
    prepared = [t for t in model["tensors"] if t.startswith("prepared/")]
    owners = sorted(t.split("/")[1] for t in prepared)
    if owners != sorted(convs):
        bad.append("%s: prepared tensors for %s, expected one for each of %s" % (isa, owners, convs))
if len(again["tensors"]) != len(packed["tensors"]):
    bad.append("re-packing changed the tensor count: %d, expected %d"
               % (len(again["tensors"]), len(packed["tensors"])))
# One prepared tensor 16 floats short: the loader accepts the file (it is well formed), a
# session of that layout must refuse it.
name = sorted(t for t in packed["tensors"] if t.startswith("prepared/"))[0]
w = cnnfile.ModelWriter(packed["meta"])
for op, node, inputs, attrs in packed["nodes"]:
    w.add_node(op, node, inputs, attrs)
for t, (dims, data) in packed["tensors"].items():
    if t == name:
        dims, data = [dims[0] - 16], data[:-64]
    w.add_tensor(t, dims, data)
w.write(tmp + "/short.cnn")
open(tmp + "/short.name", "w").write(name)
for b in bad:
    print("FAIL", b)
print("ok   file: graph and %d original tensors kept, %d prepared tensors, re-pack replaces them"
      % (len(plain["tensors"]), len(convs)) if not bad else "")
sys.exit(1 if bad else 0)
EOF
short=$(cat "$tmp/short.name" 2>/dev/null)
last=$("$PYTHON" -c "
import sys; sys.path.insert(0, 'scripts'); import cnnfile
print(cnnfile.read_model('$tmp/r20.cnn')['nodes'][-1][1])")
if CNNSCOPE_ISA=$first "$CNNSCOPE" dump "$tmp/short.cnn" --input "$tmp/x_r20.npy" --layer "$last" \
     -o "$tmp/short" >/dev/null 2>"$tmp/short.err"; then
  fail "a prepared tensor 16 floats short was accepted"
elif grep -q "tensor '$short' has .* floats .* expected" "$tmp/short.err"; then
  echo "ok   refused: $(cat "$tmp/short.err")"
else
  fail "the short prepared tensor's message does not name it: $(cat "$tmp/short.err")"
fi
echo "$fails failure(s)"
[ $fails = 0 ]
