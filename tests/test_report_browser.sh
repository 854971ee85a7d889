#!/usr/bin/env bash
# The report in a real browser: `cnnscope report` on 300 Fashion-MNIST test images (30 per
# class), then tests/browser/check_report.js opens its index.html from file:// in headless
# Debian Chromium (driven by playwright-core, no browser download) and checks that every image
# loads, the console stays clean, hovering a map point shows its thumbnail and clicking shows
# its neighbours. Last, the tooltip's thumbnail as the browser drew it is compared pixel by
# pixel with the image file it stands for.
# Leaves build/report-screenshot.png (the whole page: the CI artifact), report-tooltip.png and
# report-thumb.png in $BUILD.
# Needs chromium, node and tests/browser/node_modules (scripts/setup.sh installs them).
# Environment: BUILD (default build), CNNSCOPE (default $BUILD/cnnscope), PYTHON (default
# /usr/bin/python3), CHROMIUM (default /usr/bin/chromium); REPORT=DIR DATA=DIR check an
# existing report of the images in DATA instead of making one.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CNNSCOPE=${CNNSCOPE:-$BUILD/cnnscope}
PYTHON=${PYTHON:-/usr/bin/python3}
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

need() { echo "test_report_browser: $1 (run 'make setup', or: bash scripts/setup.sh)"; exit 1; }
[ -x "$CHROMIUM" ] || need "no Chromium at $CHROMIUM"
command -v node >/dev/null || need "node not found"
[ -f tests/browser/node_modules/playwright-core/package.json ] || need "playwright-core missing in tests/browser/node_modules"

if [ -n "${REPORT:-}" ]; then
  report=$REPORT; data=${DATA:?REPORT=DIR needs DATA=the image folder it was made from}
else
  data=$BUILD/fashion-test-small
  [ -d "$data" ] || "$PYTHON" scripts/fashion_to_folder.py --split test --limit 30 -o "$data"
  report=$BUILD/browser-report
  echo "== $CNNSCOPE report weights/fashion_resnet20.cnn $data -o $report --images 300"
  "$CNNSCOPE" report weights/fashion_resnet20.cnn "$data" -o "$report" --images 300
fi

echo "== headless Chromium on $report/index.html"
rm -f "$BUILD/report-screenshot.png" "$BUILD/report-tooltip.png" "$BUILD/report-thumb.png"
log=$BUILD/report-browser.log
set +e
node tests/browser/check_report.js "$report" "$BUILD" | tee "$log"
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { echo "FAIL: the report does not work in the browser (above)"; exit 1; }
[ -s "$BUILD/report-screenshot.png" ] || { echo "FAIL: no $BUILD/report-screenshot.png"; exit 1; }

# The hovered thumbnail, sampled at the centre of each of its blown-up pixels, must be the
# image file the tooltip names (resized to the thumbnail size when that differs), and must not
# be some other image of the set: this catches a wrong cell or sheet in the thumbs arithmetic.
hovered=$(sed -n 's/^hovered: //p' "$log")
"$PYTHON" - "$BUILD/report-thumb.png" "$data" "$hovered" <<'EOF'
import json, os, sys
from PIL import Image
shot_path, data, hovered = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
size, name = hovered["size"], hovered["name"]
shot = Image.open(shot_path).convert("L")
scale = shot.width / size   # CSS px per thumbnail pixel (device scale 1)
def sampled(img):
    return [img.getpixel((int((x + 0.5) * scale), int((y + 0.5) * scale)))
            for y in range(size) for x in range(size)]
def original(rel):
    img = Image.open(os.path.join(data, rel)).convert("L")
    return list(img.resize((size, size), Image.BILINEAR).getdata()) if img.size != (size, size) \
        else list(img.getdata())
def mean_abs(a, b):
    return sum(abs(p - q) for p, q in zip(a, b)) / len(a)
got = sampled(shot)
diff = mean_abs(got, original(name))
# the nearest miss among a few other images of the set
others = sorted(os.path.join(c, f) for c in sorted(os.listdir(data))
                for f in sorted(os.listdir(os.path.join(data, c)))[:3])
others = [o for o in others if o != name]
closest_other = min(mean_abs(got, original(o)) for o in others)
print("thumbnail of %s: mean |difference| %.2f levels to its file, %.2f to the closest of %d others"
      % (name, diff, closest_other, len(others)))
if diff > 6 or diff * 3 > closest_other:
    sys.exit("FAIL: the tooltip's thumbnail does not show %s" % name)
EOF
echo "PASS: report works in Chromium; screenshot $BUILD/report-screenshot.png"
