#!/usr/bin/env bash
# Bad input through the command line: every case is one line on stderr naming the file and
# what was wrong, exit status 2, no crash, and no output file left behind. The cases here are the
# ones tests/test_cli_bad_inputs.sh (the same corpus through every subcommand: truncated,
# corrupt, empty and missing models, images and .npy files, wrong layers, unwritable outputs)
# does not have: wrong magic and version, a non-image, the pixel limit, an unknown option.
set -u
CNNSCOPE=${CNNSCOPE:-build/cnnscope}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
model=$FIXTURES/tiny_resnet.cnn
[ -f "$model" ] || python3 tests/make_tiny_model.py "$FIXTURES"
fails=0

# expect_error "description" "pattern the message must contain" command...
expect_error() {
  local what=$1 pattern=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines; lines=$(wc -l <"$tmp/err")
  if [ $rc -ne 2 ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$pattern" "$tmp/err"; then
    echo "FAIL $what: exit $rc, $lines stderr lines, expected 2 / 1 line containing '$pattern':"
    sed 's/^/    /' "$tmp/err"; fails=$((fails + 1))
  else
    echo "ok   $what: $(cat "$tmp/err")"
  fi
}

# Model files
{ printf 'NOTAMODL'; tail -c +9 "$model"; } >"$tmp/magic.cnn"
expect_error "wrong magic" "magic" "$CNNSCOPE" info "$tmp/magic.cnn"
"$PYTHON" - "$model" "$tmp/version.cnn" <<'PY'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[8] = 7                                       # version 7
open(sys.argv[2], "wb").write(data)
PY
expect_error "wrong version" "version" "$CNNSCOPE" info "$tmp/version.cnn"

# Images
printf 'this is not an image' >"$tmp/fake.png"
expect_error "not an image" "fake.png" "$CNNSCOPE" classify "$model" "$tmp/fake.png"
"$PYTHON" -c "
from PIL import Image
Image.new('RGB', (3000, 2000)).save('$tmp/big.png')
Image.new('RGB', (20, 20), (200, 10, 10)).save('$tmp/ok.png')"
expect_error "image over the pixel limit" "big.png" "$CNNSCOPE" classify "$model" "$tmp/big.png" --max-pixels 5000000

# Layers and tensors
"$PYTHON" -c "
import numpy as np
np.save('$tmp/x.npy', np.zeros((2, 3, 16, 16), np.float32))"
# a near miss: the message suggests the real names
expect_error "misspelt layer name" "block.conv" "$CNNSCOPE" dump "$model" --input "$tmp/x.npy" --layer blok.conv -o "$tmp/d1"
expect_error "unknown option" "--bogus" "$CNNSCOPE" info "$model" --bogus

# No partial outputs: failed commands left nothing behind.
left=$(find "$tmp" -name '*.tmp.*' -o -name 'd1' -newer "$tmp/x.npy" | head -n 5)
if [ -n "$left" ]; then echo "FAIL partial outputs left: $left"; fails=$((fails + 1)); fi
# A failing preprocess (second image bad) writes neither the .npy nor its paths file.
"$CNNSCOPE" preprocess "$model" "$tmp/ok.png" "$tmp/fake.png" -o "$tmp/pre.npy" 2>/dev/null
if [ -e "$tmp/pre.npy" ] || [ -e "$tmp/pre.paths.txt" ] || ls "$tmp" | grep -q '\.tmp\.'; then
  echo "FAIL preprocess left an output after an error"; fails=$((fails + 1))
fi

# And the good path works on the same inputs.
"$CNNSCOPE" dump "$model" --input "$tmp/x.npy" --layer fc,block -o "$tmp/good" >/dev/null &&
  [ -f "$tmp/good/fc.npy" ] && [ -f "$tmp/good/block.npy" ] || { echo "FAIL good dump"; fails=$((fails + 1)); }
"$CNNSCOPE" classify "$model" "$tmp/ok.png" >/dev/null || { echo "FAIL good classify"; fails=$((fails + 1)); }

echo "$fails failure(s)"
[ $fails -eq 0 ]
