#!/usr/bin/env bash
# Back to back: an old tree and the current tree, each on its own default install.
#
#   benchmarks/backtoback.sh                       # old = e02b1f5, N = 1,000 and 10,000
#   benchmarks/backtoback.sh --old 5a85dcc --ns "200" --interval 5 --duration 15
#
# For each tree: a virtualenv with `pip install -c constraints.txt -e .` of that
# tree (no extras: what `pip install canaryd` and the systemd instructions give;
# a tree without constraints.txt gets this tree's pins),
# cached under $B2B_CACHE (default /tmp/canaryd-b2b). The old tree is a `git
# archive` of the commit (the repository is left untouched); the current tree is
# this checkout as it is. For each N, the old tree's own benchmarks/scale.py runs,
# then the current tree's, one right after the other, each choosing its own event
# loop (uvloop when its install has it). JSON goes to benchmarks/results/round5/
# (--out), tagged with the tree; the README table is printed at the end.
# benchmarks/README.md, "Back to back", tells what to compare (ratios within a
# pair, never absolute times across runs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=e02b1f5
NS="1000 10000"
INTERVAL=10
DURATION=60
OUT=$ROOT/benchmarks/results/round5
CACHE=${B2B_CACHE:-/tmp/canaryd-b2b}
PYTHON=${PYTHON:-python3}
EXTRA=()

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  echo "options: --old COMMIT  --ns \"N ...\"  --interval S  --duration S  --out DIR"
  echo "         -- ARGS...    (passed to both scale.py runs, e.g. -- --rounds 1)"
}

while [ $# -gt 0 ]; do
  case $1 in
    --old) OLD=$2; shift 2 ;;
    --ns) NS=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

OLD_SHA=$(git -C "$ROOT" rev-parse --short=7 "$OLD^{commit}")
NEW_SHA=$(git -C "$ROOT" rev-parse --short=7 HEAD)
if [ -n "$(git -C "$ROOT" status --porcelain -- canaryd benchmarks pyproject.toml constraints.txt ":!benchmarks/results")" ]; then
  NEW_SHA="$NEW_SHA+dirty"
fi
mkdir -p "$CACHE" "$OUT"

# venv DIR SRC: a default install of the tree in SRC, made once per tree and dependencies.
venv() {
  local dir=$1 src=$2
  if [ ! -f "$dir/.b2b-installed" ]; then
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    local pins=$src/constraints.txt
    # a tree older than constraints.txt (e02b1f5 is) gets the current pins: same versions
    [ -f "$pins" ] || pins=$ROOT/constraints.txt
    "$dir/bin/python" -m pip install -q -c "$pins" -e "$src" >&2
    touch "$dir/.b2b-installed"
  fi
}

# The old tree: a copy of the commit, never the repository's own files.
OLD_SRC=$CACHE/src-$OLD_SHA
if [ ! -d "$OLD_SRC" ]; then
  mkdir -p "$OLD_SRC.tmp"
  git -C "$ROOT" archive "$OLD_SHA" | tar -x -C "$OLD_SRC.tmp"
  mv "$OLD_SRC.tmp" "$OLD_SRC"
fi
OLD_VENV=$CACHE/venv-$OLD_SHA
venv "$OLD_VENV" "$OLD_SRC"
# The current tree: keyed by its dependencies (the install is editable: code changes show).
DEPS=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha1sum | cut -c1-10)
NEW_VENV=$CACHE/venv-current-$DEPS
venv "$NEW_VENV" "$ROOT"

# has_uvloop VENV: what the tree's scale.py will choose by default.
loop_of() {
  if "$1/bin/python" -c 'import uvloop' 2>/dev/null; then echo uvloop; else echo asyncio; fi
}
echo "old $OLD_SHA: $OLD_VENV (default loop: $(loop_of "$OLD_VENV"))"
echo "new $NEW_SHA: $NEW_VENV (default loop: $(loop_of "$NEW_VENV"))"

# run LABEL SHA VENV SRC N: the tree's own scale.py; the JSON tagged with the tree.
run() {
  local label=$1 sha=$2 venv_dir=$3 src=$4 n=$5
  local json=$OUT/b2b-$n-${INTERVAL}s-$label.json
  echo "== $label ($sha), N = $n, $(cut -d' ' -f1-3 /proc/loadavg) (load average before)"
  (cd "$src" && env -u PYTHONPATH "$venv_dir/bin/python" benchmarks/scale.py --canaries "$n" \
    --interval "$INTERVAL" --duration "$DURATION" --json "$json" "${EXTRA[@]}")
  "$NEW_VENV/bin/python" - "$json" "$label" "$sha" "$venv_dir" <<'PY'
import json, pathlib, subprocess, sys
path, label, sha, env = sys.argv[1:]
doc = json.loads(pathlib.Path(path).read_text())
uv = subprocess.run([f"{env}/bin/python", "-c", "import uvloop"], capture_output=True).returncode == 0
doc["tree"] = {"label": label, "commit": sha, "venv": env, "uvloop_installed": uv}
if doc["options"]["loop"] == "uvloop" and not uv:
    sys.exit(f"{label}: ran on uvloop, which its default install lacks")
pathlib.Path(path).write_text(json.dumps(doc, indent=2) + "\n")
PY
}

FILES=()
for n in $NS; do
  run old "$OLD_SHA" "$OLD_VENV" "$OLD_SRC" "$n"
  FILES+=("$OUT/b2b-$n-${INTERVAL}s-old.json")
  run new "$NEW_SHA" "$NEW_VENV" "$ROOT" "$n"
  FILES+=("$OUT/b2b-$n-${INTERVAL}s-new.json")
done
echo
"$NEW_VENV/bin/python" "$ROOT/benchmarks/scale.py" --markdown "${FILES[@]}"
