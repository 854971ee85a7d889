#!/usr/bin/env bash
# The bad-input corpus through the command line. Every subcommand that reads user files gets a
# truncated model, a model with a flipped byte (checksum error), an empty file, a folder where a
# file is expected (and a file where a folder is), a corrupt PNG, a JPEG cut off in the middle
# of its scan, a 0-byte image, a missing path, a wrong layer name, .npy files of the wrong dtype
# or shape, a feature table whose side file does not match it, and an output path that cannot
# be created. Each case must:
#   - exit with status 2 (not 0, not 1, not a signal: a sanitizer report or a crash fails it);
#   - print exactly one line on stderr, naming the file and saying what is wrong;
#   - leave no output file, complete or partial, and no temporary file.
# The documented exception: `patches` skips an unreadable image inside a folder with one
# warning line and goes on (exit 0): a million-image job does not stop for one bad file.
#
# The corpus is made here from tests/make_tiny_model.py's tiny_resnet and PIL / numpy (nothing
# binary is committed). CNNSCOPE may be the sanitizer build (the sanitized pass of `make test`
# runs this file with build-san/cnnscope).
set -u
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
in=$tmp/in out=$tmp/out
mkdir -p "$in"
[ -f "$FIXTURES/tiny_resnet.cnn" ] || python3 tests/make_tiny_model.py "$FIXTURES" >/dev/null ||
  { echo "FAIL: cannot make $FIXTURES/tiny_resnet.cnn"; exit 1; }
model=$in/good.cnn
cp "$FIXTURES/tiny_resnet.cnn" "$model"   # input 3x16x16, 5 classes, layers conv1 ... fc

# ---- the corpus -------------------------------------------------------------------------------
size=$(stat -c %s "$model")
head -c $((size / 2)) "$model" >"$in/truncated.cnn"
: >"$in/empty.cnn"
mkdir "$in/dir.cnn" "$in/dir.png" "$in/dir.npy" "$in/emptyfolder"
echo "a file, not a folder" >"$in/notadir"
"$PYTHON" - "$in" <<'PY' || { echo "FAIL: cannot make the corpus"; exit 1; }
import os, shutil, sys
import numpy as np
from PIL import Image
d = sys.argv[1]
model = bytearray(open(d + "/good.cnn", "rb").read())
model[len(model) - 10] ^= 0x10                    # one bit of the last tensor: checksum error
open(d + "/flipped.cnn", "wb").write(model)

img = Image.new("RGB", (20, 18))
img.putdata([((x * 13) % 256, (y * 17) % 256, (x * y) % 256) for y in range(18) for x in range(20)])
img.save(d + "/good.png")
img.save(d + "/good.jpg", quality=90)
jpeg = open(d + "/good.jpg", "rb").read()
scan = jpeg.find(b"\xff\xda")                     # start of scan: cut halfway through the data
assert scan > 0
open(d + "/truncated.jpg", "wb").write(jpeg[:scan + (len(jpeg) - scan) // 2])
png = bytearray(open(d + "/good.png", "rb").read())
idat = png.find(b"IDAT")
png[idat + 4] ^= 0xFF                             # the zlib header of the pixel data
png[idat + 5] ^= 0xFF
open(d + "/corrupt.png", "wb").write(png)
open(d + "/empty.png", "wb").close()

# ImageFolders with the model's 5 classes; "badfolder" holds one corrupt PNG.
for folder in ("folder", "badfolder"):
    for c in ("zero", "one", "two", "three", "four"):
        os.makedirs("%s/%s/%s" % (d, folder, c))
        shutil.copy(d + "/good.png", "%s/%s/%s/a.png" % (d, folder, c))
shutil.copy(d + "/corrupt.png", d + "/badfolder/two/bad.png")

np.save(d + "/x.npy", np.zeros((2, 3, 16, 16), np.float32))
np.save(d + "/wrongdtype.npy", np.zeros((2, 3, 16, 16), np.float64))
np.save(d + "/wrongshape.npy", np.zeros((2, 3, 15, 16), np.float32))
np.save(d + "/onedim.npy", np.zeros((5,), np.float32))
whole = open(d + "/x.npy", "rb").read()
open(d + "/truncated.npy", "wb").write(whole[:len(whole) - 100])
open(d + "/empty.npy", "wb").close()
PY
# A real feature table (feats.npy + paths, labels, layer), then one whose paths file has a line
# too few: what a run killed between its two renames, or a copy of half a pair, leaves behind.
"$CNNSCOPE" features "$model" "$in/folder" --layer fc -o "$in/feats.npy" >/dev/null ||
  { echo "FAIL: cnnscope features on the good folder"; exit 1; }
cp "$in/feats.npy" "$in/mismatch.npy"
head -n 4 "$in/feats.paths.txt" >"$in/mismatch.paths.txt"
cp "$in/feats.npy" "$in/badlabels.npy"
head -n 3 "$in/feats.labels.txt" >"$in/badlabels.labels.txt"
"$PYTHON" -c "import numpy as np; np.save('$in/feats64.npy', np.load('$in/feats.npy').astype(np.float64))"
# What a preprocess killed between its two renames leaves (see tests/fuzz/README.md): the
# previous X.npy (3 rows) beside the new run's X.paths.txt (2 lines).
"$CNNSCOPE" preprocess "$model" "$in/good.png" "$in/good.jpg" "$in/good.png" -o "$in/pair.npy" >/dev/null &&
  "$CNNSCOPE" preprocess "$model" "$in/good.jpg" "$in/good.png" -o "$in/new.npy" >/dev/null ||
  { echo "FAIL: cnnscope preprocess on good images"; exit 1; }
cp "$in/new.paths.txt" "$in/pair.paths.txt"
touch "$tmp/stamp"

fails=0 cases=0
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

# run_case: runs the command with its outputs under a fresh $out; sets rc and the stderr file.
run_case() {
  rm -rf "$out"; mkdir -p "$out"
  "$CNNSCOPE" "$@" >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  cases=$((cases + 1))
}

# Files the failed run left: anything under $out, any temporary file anywhere, anything new
# beside the inputs.
leftovers() {
  { find "$out" -mindepth 1 ! -type d; find "$tmp" -name '*.tmp.*'
    find "$in" -newer "$tmp/stamp" ! -type d; } 2>/dev/null | sed "s#^$tmp/##" | tr '\n' ' '
}

# bad WHAT FILE REASON command...: exit 2, one stderr line naming FILE and matching REASON
# (an extended regular expression, case-insensitive), and nothing left behind.
bad() {
  local what=$1 file=$2 reason=$3 problems="" lines left
  shift 3
  run_case "$@"
  lines=$(wc -l <"$tmp/stderr")
  if [ $rc -gt 128 ]; then problems+=" killed by signal $((rc - 128));"
  elif [ $rc -ne 2 ]; then problems+=" exit $rc, expected 2;"; fi
  [ "$lines" -eq 1 ] || problems+=" $lines lines on stderr, expected 1;"
  grep -qF -- "$file" "$tmp/stderr" || problems+=" the message does not name $file;"
  grep -qEi -- "$reason" "$tmp/stderr" || problems+=" the message does not say /$reason/;"
  left=$(leftovers)
  [ -z "$left" ] || problems+=" left: $left;"
  if [ -n "$problems" ]; then
    fail "$what:$problems"
    echo "     cnnscope $*" | sed "s#$tmp/##g"
    head -n 20 "$tmp/stderr" | sed "s#$tmp/##g; s/^/     | /"
  else
    echo "ok   $what: $(sed "s#$tmp/##g" "$tmp/stderr")"
  fi
  find "$tmp" -name '*.tmp.*' -delete; find "$in" -newer "$tmp/stamp" ! -type d -delete
}

img=$in/good.png x=$in/x.npy feats=$in/feats.npy folder=$in/folder

# ---- model files: every command that loads one -------------------------------------------------
for c in "truncated.cnn|truncated" "flipped.cnn|checksum" "empty.cnn|0 bytes" \
         "dir.cnn|not a regular file" "nosuch.cnn|cannot open"; do
  f=${c%%|*} why=${c#*|} m=$in/${c%%|*}
  bad "info, $f" "$f" "$why" info "$m"
  bad "classify, $f" "$f" "$why" classify "$m" "$img"
  bad "eval, $f" "$f" "$why" eval "$m" "$folder" --predictions "$out/pred.csv"
  bad "dump, $f" "$f" "$why" dump "$m" --input "$x" --layer fc -o "$out/dump"
  bad "preprocess, $f" "$f" "$why" preprocess "$m" "$img" -o "$out/x.npy"
  bad "filters, $f" "$f" "$why" filters "$m" -o "$out/filters.png"
  bad "maps, $f" "$f" "$why" maps "$m" "$img" -o "$out/maps.png"
  bad "patches, $f" "$f" "$why" patches "$m" "$folder" -o "$out/patches"
  bad "features, $f" "$f" "$why" features "$m" "$folder" --layer fc -o "$out/f.npy"
  bad "neighbors --query-image, $f" "$f" "$why" neighbors "$feats" --query-image "$m" "$img"
  bad "explain, $f" "$f" "$why" explain "$m" "$img" --method saliency -o "$out/e.png"
done

# ---- image files: every command that decodes one -----------------------------------------------
for c in "corrupt.png|corrupt" "truncated.jpg|truncated" "empty.png|empty" \
         "dir.png|directory" "nosuch.png|cannot open"; do
  f=${c%%|*} why=${c#*|} i=$in/${c%%|*}
  bad "classify, $f" "$f" "$why" classify "$model" "$img" "$i"
  bad "preprocess, $f" "$f" "$why" preprocess "$model" "$img" "$i" -o "$out/x.npy"
  bad "maps, $f" "$f" "$why" maps "$model" "$i" -o "$out/maps.png"
  bad "neighbors --query-image, $f" "$f" "$why" neighbors "$feats" --query-image "$model" "$i"
  bad "explain, $f" "$f" "$why" explain "$model" "$i" --method saliency -o "$out/e.png"
done

# ---- folders: a corrupt image inside, no images, a file, a missing path ------------------------
bad "eval, corrupt image in the folder" "bad.png" "corrupt" eval "$model" "$in/badfolder" --predictions "$out/pred.csv"
bad "preprocess, corrupt image in the folder" "bad.png" "corrupt" preprocess "$model" "$in/badfolder" -o "$out/x.npy"
bad "features, corrupt image in the folder" "bad.png" "corrupt" features "$model" "$in/badfolder" --layer fc -o "$out/f.npy"
bad "explain, corrupt image in the folder" "bad.png" "corrupt" explain "$model" "$in/badfolder" --method saliency -o "$out/e"
# patches skips it (documented): exit 0, one warning naming the file, and the other images used.
run_case patches "$model" "$in/badfolder" -o "$out/patches"
if [ $rc -ne 0 ] || [ "$(wc -l <"$tmp/stderr")" -ne 1 ] || ! grep -q "skipping .*bad.png.*corrupt" "$tmp/stderr" ||
   ! grep -q '"skipped": 1' "$out/patches/index.json" 2>/dev/null; then
  fail "patches, corrupt image in the folder: exit $rc (expected 0, one 'skipping' warning, skipped 1):"
  sed 's/^/     | /' "$tmp/stderr"
else
  echo "ok   patches, corrupt image in the folder (skipped): $(sed "s#$tmp/##g" "$tmp/stderr")"
fi
for cmd in eval preprocess features patches; do
  case $cmd in
    eval) args=(--predictions "$out/pred.csv") ;; preprocess) args=(-o "$out/x.npy") ;;
    features) args=(--layer fc -o "$out/f.npy") ;; patches) args=(-o "$out/patches") ;;
  esac
  bad "$cmd, a folder without images" "emptyfolder" "no (readable )?images" $cmd "$model" "$in/emptyfolder" "${args[@]}"
  # preprocess reads a single non-folder argument as an image
  [ $cmd = preprocess ] && why="not an image" || why="not a folder"
  bad "$cmd, a file given as the folder" "notadir" "$why" $cmd "$model" "$in/notadir" "${args[@]}"
  [ $cmd = preprocess ] && why="cannot open" || why="not a folder|does not exist"
  bad "$cmd, a missing folder" "nosuchdir" "$why" $cmd "$model" "$in/nosuchdir" "${args[@]}"
done

# ---- .npy files: network inputs (dump, explain) and feature tables (neighbors, knn-eval, embed) -
for c in "wrongdtype.npy|dtype '<f8'" "wrongshape.npy|does not match the model input" \
         "onedim.npy|does not match the model input" "truncated.npy|data bytes" \
         "empty.npy|too short" "dir.npy|not a regular file" "nosuch.npy|cannot open"; do
  f=${c%%|*} why=${c#*|} n=$in/${c%%|*}
  bad "dump, $f" "$f" "$why" dump "$model" --input "$n" --layer fc -o "$out/dump"
  bad "explain, $f" "$f" "$why" explain "$model" "$n" --method saliency -o "$out/e"
done
# wrongshape.npy [2,3,15,16] is a valid feature table (rows flattened): not in this list.
for c in "feats64.npy|dtype '<f8'" "onedim.npy|expected features \[N, F\]" \
         "truncated.npy|data bytes" "empty.npy|too short" "dir.npy|not a regular file" \
         "nosuch.npy|cannot open" "mismatch.npy|4 lines, but .* has 5 rows" \
         "badlabels.npy|3 lines, but .* has 5 rows" "pair.npy|2 lines, but .* has 3 rows"; do
  f=${c%%|*} why=${c#*|} n=$in/${c%%|*}
  case $f in
    mismatch.npy|pair.npy) named=${f%.npy}.paths.txt ;; badlabels.npy) named=badlabels.labels.txt ;;
    *) named=$f ;;
  esac
  bad "neighbors, $f" "$named" "$why" neighbors "$n" --query 0 -o "$out/nn.png"
  bad "knn-eval, $f" "$named" "$why" knn-eval "$n" -k 2 --csv "$out/knn.csv"
  bad "embed, $f" "$named" "$why" embed "$n" --method pca -o "$out/emb.csv"
done
bad "knn-eval, no labels file" "wrongshape.npy" "no labels" knn-eval "$in/wrongshape.npy" --csv "$out/knn.csv"

# ---- layer names --------------------------------------------------------------------------------
why="no layer 'nosuch'"
bad "dump, wrong layer" "good.cnn" "$why" dump "$model" --input "$x" --layer fc,nosuch -o "$out/dump"
bad "filters, wrong layer" "good.cnn" "$why" filters "$model" --layer nosuch -o "$out/filters.png"
bad "maps, wrong layer" "good.cnn" "$why" maps "$model" "$img" --layer nosuch -o "$out/maps.png"
bad "patches, wrong layer" "good.cnn" "$why" patches "$model" "$folder" --layer nosuch -o "$out/patches"
bad "features, wrong layer" "good.cnn" "$why" features "$model" "$folder" --layer nosuch -o "$out/f.npy"
bad "neighbors, wrong layer" "good.cnn" "$why" neighbors "$feats" --query-image "$model" "$img" --layer nosuch
bad "explain --layer, wrong layer" "good.cnn" "$why" explain "$model" "$img" --method gradcam --layer nosuch -o "$out/e.png"
bad "explain --neuron, wrong layer" "good.cnn" "$why" explain "$model" "$img" --method saliency --neuron nosuch:0 -o "$out/e.png"

# ---- output paths that cannot be created (under a regular file: fails for root too) -------------
u=$in/notadir why="not a (directory|folder)"
bad "eval --predictions, unwritable" "notadir/pred.csv" "$why" eval "$model" "$folder" --predictions "$u/pred.csv"
bad "dump -o, unwritable" "notadir/dump" "$why" dump "$model" --input "$x" --layer fc -o "$u/dump"
bad "preprocess -o, unwritable" "notadir/x.npy" "$why" preprocess "$model" "$img" -o "$u/x.npy"
bad "filters -o, unwritable" "notadir/filters.png" "$why" filters "$model" -o "$u/filters.png"
bad "maps -o, unwritable" "notadir/maps.png" "$why" maps "$model" "$img" -o "$u/maps.png"
bad "patches -o, unwritable" "notadir/patches" "$why" patches "$model" "$folder" -o "$u/patches"
bad "features -o, unwritable" "notadir/f.npy" "$why" features "$model" "$folder" --layer fc -o "$u/f.npy"
bad "neighbors -o, unwritable" "notadir/nn.png" "$why" neighbors "$feats" --query 0 -o "$u/nn.png"
bad "knn-eval --csv, unwritable" "notadir/knn.csv" "$why" knn-eval "$feats" -k 2 --csv "$u/knn.csv"
bad "embed -o, unwritable" "notadir/emb.csv" "$why" embed "$feats" --method pca -o "$u/emb.csv"
bad "explain -o, unwritable" "notadir/e.png" "$why" explain "$model" "$img" --method saliency -o "$u/e.png"
bad "preprocess -o, a folder" "dir.npy" "is a folder" preprocess "$model" "$img" -o "$in/dir.npy"
# a second output that cannot be created: refused before the first one is written
bad "embed --plot, unwritable" "notadir/emb.svg" "$why" embed "$feats" --method pca -o "$out/emb.csv" --plot "$u/emb.svg"
bad "explain --save-raw, unwritable" "notadir/raw.npy" "$why" explain "$model" "$img" --method saliency \
  -o "$out/e.png" --save-raw "$u/raw.npy"

# ---- report (a whole folder of outputs) -----------------------------------------------------------
if "$CNNSCOPE" report --help >/dev/null 2>&1; then
  for c in "truncated.cnn|truncated" "flipped.cnn|checksum" "empty.cnn|0 bytes" \
           "dir.cnn|not a regular file" "nosuch.cnn|cannot open"; do
    bad "report, ${c%%|*}" "${c%%|*}" "${c#*|}" report "$in/${c%%|*}" "$folder" -o "$out/report"
  done
  bad "report, a folder without images" "emptyfolder" "no images" report "$model" "$in/emptyfolder" -o "$out/report"
  bad "report, a file given as the folder" "notadir" "not a folder" report "$model" "$in/notadir" -o "$out/report"
  bad "report, a missing folder" "nosuchdir" "not a folder|does not exist" report "$model" "$in/nosuchdir" -o "$out/report"
  bad "report -o, unwritable" "notadir/report" "not a (directory|folder)" report "$model" "$folder" -o "$in/notadir/report"
  # Unreadable images are left out with a warning (documented): exit 0, the file named.
  run_case report "$model" "$in/badfolder" -o "$out/report"
  if [ $rc -ne 0 ] || ! grep -q "warning: .*bad.png" "$tmp/stderr" || [ ! -f "$out/report/index.html" ]; then
    fail "report, corrupt image in the folder: exit $rc (expected 0, a warning naming bad.png, index.html)"
    grep -v '^report: ' "$tmp/stderr" | sed 's/^/     | /'
  else
    echo "ok   report, corrupt image in the folder (left out): $(grep 'bad.png' "$tmp/stderr" | sed "s#$tmp/##g")"
  fi
else
  echo "(no report command in this build: its cases are skipped)"
fi

# ---- and the good paths work on the same inputs (so the cases above fail for their reason) -----
good() {
  local what=$1; shift
  run_case "$@"
  if [ $rc -ne 0 ] || [ -s "$tmp/stderr" ]; then
    fail "$what on good inputs: exit $rc"; sed 's/^/     | /' "$tmp/stderr"
  fi
}
good "classify" classify "$model" "$img" "$in/good.jpg"
good "eval" eval "$model" "$folder" --predictions "$out/pred.csv"
good "dump" dump "$model" --input "$x" --layer fc -o "$out/dump"
good "preprocess" preprocess "$model" "$folder" -o "$out/x.npy"
good "maps" maps "$model" "$img" -o "$out/maps.png"
good "neighbors" neighbors "$feats" --query 0 -k 2 -o "$out/nn.png"
good "neighbors --query-image" neighbors "$feats" --query-image "$model" "$img" -k 2
good "knn-eval" knn-eval "$feats" -k 2 --csv "$out/knn.csv"
good "embed" embed "$feats" --method pca -o "$out/emb.csv"
good "explain" explain "$model" "$img" --method saliency -o "$out/e.png"

echo "$cases cases, $fails failure(s)"
[ $fails -eq 0 ]
