#!/bin/bash
# The installed wheel, used the way a painter uses it (`make wheel-smoke`; CI runs it before the
# real-editor tests, which then install the plugins with this venv's `easel`):
#
#   1. build the wheel from a copy of the checkout's files (what git tracks plus new files it does
#      not ignore: a stale build/ or egg-info never leaks into it) and check what it carries;
#   2. install it, not editable, into a fresh venv (.venv-wheel) with the locked versions
#      (-c requirements.lock: torch is pinned, pip never pulls an unpinned CUDA build);
#   3. from a folder outside the checkout, with a throw-away HOME: easel --version, python -m easel
#      --version, install-plugin krita/gimp (files checked against the checkout), package-plugin,
#      and a real `easel serve` on the built-in demo model (offline) with `easel generate` against
#      it, checking the PNG.
#
# Polls with deadlines, never fixed sleeps; the server is stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}             # makes the clean venv
BUILD_PY=${BUILD_PY:-.venv/bin/python} # runs `pip wheel`
VENV=${WHEEL_VENV:-.venv-wheel}
DIST=${DIST:-dist}
SERVE_DEADLINE=${SERVE_DEADLINE:-180}
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH VIRTUAL_ENV PYTHONHOME
t0=$SECONDS
say() { echo "wheel-smoke: $* [$((SECONDS - t0)) s]"; }
fail() { echo "wheel-smoke: FAILED: $*" >&2; exit 1; }

src=$(mktemp -d /tmp/easel-wheel-src.XXXXXX)
work=$(mktemp -d /tmp/easel-wheel-smoke.XXXXXX)
server_pid=""
stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$server_pid" 2>/dev/null && { echo "wheel-smoke: the server ignored SIGTERM; killing it" >&2; kill -KILL "$server_pid"; }
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
cleanup() { stop_server; rm -rf "$src" "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- 1. the wheel ---------------------------------------------------------------------------------
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$src"
mkdir -p "$DIST"
rm -f "$DIST"/easel-*.whl
"$BUILD_PY" -m pip wheel --no-deps -w "$DIST" "$src" > "$work/wheel.log" 2>&1 \
  || { grep -v "is ignored: it is neither a file nor a directory" "$work/wheel.log" >&2; fail "pip wheel"; }
wheels=("$DIST"/easel-*.whl)
[ ${#wheels[@]} = 1 ] && [ -f "${wheels[0]}" ] || fail "expected one wheel in $DIST, found: ${wheels[*]}"
WHEEL=$REPO/${wheels[0]}
"$BUILD_PY" - "$WHEEL" <<'EOF' || fail "the wheel's contents"
import sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
names = set(wheel.namelist())
entry_points = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
assert entry_points and "easel = easel.cli:main" in wheel.read(entry_points[0]).decode(), "no `easel` command"
need = ["easel/__main__.py", "easel/client/connection.py", "easel/client/send_region.py",
        "easel/plugin_install.py", "easel/plugins/krita/easel_krita.desktop",
        "easel/plugins/krita/easel_krita/__init__.py", "easel/plugins/gimp/easel_gimp/easel_gimp.py"]
missing = [n for n in need if n not in names]
weights = [n for n in names if n.startswith("easel/server/demo/weights/") and n.endswith(".safetensors")]
stray = [n for n in names if n.startswith(("tests/", "bench/", "plugin_krita/", "plugin_gimp/"))
         or "/shared/" in n.removeprefix("easel/") and n.startswith("easel/plugins/")
         or "__pycache__" in n or n.endswith(".pyc")]
assert not missing, f"missing from the wheel: {missing}"
assert weights, "the demo model's weights are missing from the wheel"
assert not stray, f"the wheel carries what it should not: {sorted(stray)[:10]}"
print(f"wheel-smoke: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, demo weights {weights}")
EOF
say "built ${wheels[0]}"

# -- 2. a clean venv with the wheel ---------------------------------------------------------------
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -c requirements.lock "$WHEEL" > "$work/pip.log" 2>&1 \
  || { grep -v "is ignored: it is neither a file nor a directory" "$work/pip.log" >&2; fail "pip install"; }
"$VENV/bin/pip" install --no-deps -r requirements-annotators.lock >> "$work/pip.log" 2>&1 \
  || { grep -v "is ignored: it is neither a file nor a directory" "$work/pip.log" >&2; fail "pip install annotators"; }
"$VENV/bin/pip" show easel | grep -q "^Editable project location" && fail "easel is installed editable"
say "installed into $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

# -- 3. the CLI, from outside the checkout --------------------------------------------------------
E=$REPO/$VENV/bin/easel
P=$REPO/$VENV/bin/python
cd "$work"
export HOME=$work/home XDG_CONFIG_HOME=$work/home/.config XDG_DATA_HOME=$work/home/.local/share
mkdir -p "$HOME"
want="easel $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/server/easel/__init__.py")"
[ "$("$E" --version)" = "$want" ] || fail "easel --version: $("$E" --version), want $want"
[ "$("$P" -m easel --version)" = "$want" ] || fail "python -m easel --version"
where=$("$P" -c 'import easel; print(easel.__file__)')
case $where in "$REPO/$VENV"/lib/python3*/site-packages/easel/__init__.py) ;; *) fail "easel imported from $where";; esac
say "$want, imported from the venv's site-packages"

"$E" install-plugin krita --dest "$work/pykrita" --kritarc "$work/kritarc" >/dev/null
for f in easel_krita.desktop easel_krita/__init__.py easel_krita/shared/connection.py \
         easel_krita/shared/send_region.py easel_krita/vendor/websockets/__init__.py; do
  [ -f "$work/pykrita/$f" ] || fail "install-plugin krita: no $f"
done
grep -qx "enable_easel_krita=true" "$work/kritarc" || fail "install-plugin krita did not enable the plugin in kritarc"
diff -r -x shared -x vendor -x __pycache__ "$REPO/plugin_krita/easel_krita" "$work/pykrita/easel_krita" \
  || fail "the installed Krita plugin differs from plugin_krita/"
diff -r -x __pycache__ "$REPO/server/easel/client" "$work/pykrita/easel_krita/shared" \
  || fail "the Krita plugin's shared/ differs from easel.client"
"$E" install-plugin gimp --dest "$work/plug-ins" >/dev/null
[ -x "$work/plug-ins/easel_gimp/easel_gimp.py" ] || fail "install-plugin gimp: easel_gimp.py missing or not executable"
for f in shared/connection.py vendor/websockets/__init__.py; do
  [ -f "$work/plug-ins/easel_gimp/$f" ] || fail "install-plugin gimp: no $f"
done
diff -r -x shared -x vendor -x __pycache__ "$REPO/plugin_gimp/easel_gimp" "$work/plug-ins/easel_gimp" \
  || fail "the installed GIMP plug-in differs from plugin_gimp/"
"$E" package-plugin krita --out "$work/easel-krita.zip" >/dev/null
"$P" - "$work/easel-krita.zip" <<'EOF' || fail "package-plugin krita"
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for n in ("easel_krita.desktop", "easel_krita/__init__.py", "easel_krita/shared/connection.py",
          "easel_krita/vendor/websockets/__init__.py"):
    assert n in names, f"{n} is not in the zip"
EOF
say "install-plugin krita/gimp and package-plugin krita: files in place"

"$E" serve --host 127.0.0.1 --port 0 --threads 1 --output-dir "$work/results" > "$work/serve.log" 2>&1 &
server_pid=$!
deadline=$((SECONDS + SERVE_DEADLINE))
url=""
while [ -z "$url" ]; do
  url=$(sed -n 's/.*serving on \(ws:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/serve.log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; fail "easel serve exited before serving"; }
  [ $SECONDS -lt $deadline ] || { cat "$work/serve.log" >&2; fail "easel serve did not serve within $SERVE_DEADLINE s"; }
  sleep 0.2
done
say "easel serve (demo model) on $url"
timeout 120 "$E" generate --url "$url" --prompt "a red circle" --seed 1 --quiet --out "$work/X.png" \
  || { cat "$work/serve.log" >&2; fail "easel generate"; }
"$P" - "$work/X.png" <<'EOF' || fail "the generated PNG"
import sys
from PIL import Image
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
im = Image.open(sys.argv[1]).convert("RGB")
assert im.size == (64, 64), f"the demo model paints 64x64, got {im.size}"
raw = im.tobytes()
px = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
red = sum(r > g + 40 and r > b + 40 for r, g, b in px) / len(px)
assert len(set(px)) > 16, "a flat image"
assert red > 0.05, f"'a red circle' has {red:.1%} red pixels"
print(f"wheel-smoke: X.png {im.size[0]}x{im.size[1]}, {len(set(px))} colours, {red:.0%} red")
EOF
stop_server
grep -q "shutting down" "$work/serve.log" || fail "the server did not shut down cleanly on SIGTERM"
say "ok"
