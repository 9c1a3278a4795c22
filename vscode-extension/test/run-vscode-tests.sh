#!/usr/bin/env bash
# The extension in a real VS Code (code-server 1.139, headless Chromium): builds and packages
# hvdk-<version>.vsix, installs it into a fresh code-server profile, opens the repository, and
#   1. drives the UI like a person (test/drive.mjs): breakpoint in sensor_write_ctrl, "Debug: Start
#      Debugging" from .vscode/launch.json, the stop, Call Stack, req->offset, step over, the
#      Partitions view, continue, stop; screenshots;
#   2. runs the extension-test hook (test/runtests.mjs → dist/test/index.js inside the extension
#      host): the same session through the API, and the hv lsp client.
# Needs scripts/install-toolchain.sh first. Environment: HVDK_TEST_HV (the hv binary; default
# target/release/hv), HVDK_TEST_KVM=1|0 (guest-booting parts; default: /dev/kvm writable),
# HVDK_VSCODE_OUT (default target/vscode), HVDK_TEST_PARTS ("ui hook", the default, or one of
# them). Exit 0 when every part that ran passed.
set -euo pipefail
EXT=$(cd "$(dirname "$0")/.." && pwd)
REPO=$(cd "$EXT/.." && pwd)
ROOT=${HVDK_VSCODE_CACHE:-$HOME/.cache/hvdk-vscode}
OUT=${HVDK_VSCODE_OUT:-$REPO/target/vscode}
if [ ! -f "$ROOT/env.sh" ] || [ ! -d "$EXT/node_modules" ]; then
  echo "run-vscode-tests: the toolchain is not installed: run vscode-extension/scripts/install-toolchain.sh" >&2
  exit 2
fi
# shellcheck source=/dev/null
source "$ROOT/env.sh"
mkdir -p "$OUT"
rm -f "$OUT"/{stop,stop-step,partitions,partitions-idle,ui-fail}.png "$OUT/hook-result.json"
t0=$(date +%s)
export HVDK_TEST_HV=${HVDK_TEST_HV:-$REPO/target/release/hv}
[ -x "$HVDK_TEST_HV" ] || { echo "run-vscode-tests: no hv binary at $HVDK_TEST_HV (cargo build --release)" >&2; exit 2; }
if [ -z "${HVDK_TEST_KVM:-}" ]; then
  if [ -w /dev/kvm ]; then HVDK_TEST_KVM=1; else HVDK_TEST_KVM=0; export HVDK_TEST_KVM_REASON="/dev/kvm is missing or not writable"; fi
fi
export HVDK_TEST_KVM
if "$HVDK_TEST_HV" help lsp >/dev/null 2>&1; then
  export HVDK_TEST_LSP=1
else
  export HVDK_TEST_LSP=0 HVDK_TEST_LSP_REASON="$HVDK_TEST_HV has no lsp subcommand"
fi
if [ "$HVDK_TEST_KVM" = 1 ] && ! "$HVDK_TEST_HV" help dap >/dev/null 2>&1; then
  echo "run-vscode-tests: $HVDK_TEST_HV has no dap subcommand: the debug-session parts cannot run" >&2
  exit 1
fi

# 1. Type-check, bundle, package.
cd "$EXT"
node_modules/.bin/tsc --noEmit -p .
node scripts/build.mjs --production
node --test --test-reporter=tap dist/unit/*.test.js >"$OUT/unit.log" 2>&1 || { cat "$OUT/unit.log" >&2; exit 1; }
echo "run-vscode-tests: unit tests: $(grep -E '^# (pass|fail)' "$OUT/unit.log" | tr '\n' ' ')"
version=$(node -p 'require("./package.json").version')
VSIX="$OUT/hvdk-$version.vsix"
node_modules/.bin/vsce package --no-dependencies --skip-license --allow-missing-repository --no-rewrite-relative-links -o "$VSIX" >"$OUT/vsce.log" 2>&1 || { cat "$OUT/vsce.log" >&2; exit 1; }
echo "run-vscode-tests: packaged $VSIX ($(du -k "$VSIX" | cut -f1) KiB)"

# 2. A fresh profile with the .vsix installed, and the user settings the tests need.
PROFILE="$OUT/profile"
rm -rf "$PROFILE"
mkdir -p "$PROFILE/udd/User" "$PROFILE/exts"
CS_ARGS=(--user-data-dir "$PROFILE/udd" --extensions-dir "$PROFILE/exts")
code-server "${CS_ARGS[@]}" --install-extension "$VSIX" >"$OUT/install-extension.log" 2>&1 || { cat "$OUT/install-extension.log" >&2; exit 1; }
code-server "${CS_ARGS[@]}" --list-extensions --show-versions | grep -q '^hvdk.hvdk@' || { echo "run-vscode-tests: hvdk.hvdk not installed" >&2; exit 1; }
cat > "$PROFILE/udd/User/settings.json" <<JSON
{
  "hvdk.hvPath": "$HVDK_TEST_HV",
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "debug.openDebug": "openOnDebugBreak",
  "debug.toolBarLocation": "floating",
  "window.restoreWindows": "none",
  "files.hotExit": "off",
  "files.autoSave": "off",
  "terminal.integrated.gpuAcceleration": "off",
  "debug.saveBeforeStart": "none",
  "chat.disableAIFeatures": true,
  "workbench.secondarySideBar.defaultVisibility": "hidden"
}
JSON

SPID=""
stop_server() {
  if [ -n "$SPID" ]; then
    kill -TERM -- -"$SPID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 -- -"$SPID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- -"$SPID" 2>/dev/null || true
    SPID=""
  fi
}
trap stop_server EXIT
# Each part gets its own server (and extension host, adapter and system), so nothing of one
# part's system (its link socket, gdb ports) is left for the next.
start_server() {
  PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  # The adapter's session log (every DAP message and gdb/MI line), kept per part for failures.
  export HV_DAP_LOG="$OUT/dap-$1.log"
  rm -f "$HV_DAP_LOG"
  setsid code-server --auth none --bind-addr "127.0.0.1:$PORT" --disable-telemetry --disable-update-check \
    --disable-workspace-trust --disable-getting-started-override "${CS_ARGS[@]}" --vscode-option enable-smoke-test-driver \
    "$REPO" >"$OUT/server-$1.log" 2>&1 &
  SPID=$!
  for _ in $(seq 120); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && return 0; sleep 0.5; done
  echo "run-vscode-tests: code-server did not answer on port $PORT" >&2
  cat "$OUT/server-$1.log" >&2
  return 1
}
# No system may be left running by a part (its link socket would make `hv` ambiguous).
wait_no_system() {
  for _ in $(seq 60); do
    "$HVDK_TEST_HV" console --batch --count 1 --interval 50 >/dev/null 2>&1 || return 0
    sleep 0.5
  done
  echo "run-vscode-tests: a system is still running after the part" >&2
}
export TOOLS="$EXT/node_modules" SHOT_DIR="$OUT" REPO

status=0
PARTS=${HVDK_TEST_PARTS:-ui hook}
# 3. The UI.
if [[ " $PARTS " == *" ui "* ]]; then
start_server ui
t1=$(date +%s)
if CS_URL="http://127.0.0.1:$PORT/?folder=$REPO" node "$EXT/test/drive.mjs"; then
  echo "run-vscode-tests: UI part passed ($(( $(date +%s) - t1 )) s)"
else
  echo "run-vscode-tests: UI part FAILED (see $OUT/ui-fail.png, $OUT/server-ui.log, $OUT/dap-ui.log)" >&2
  status=1
fi
stop_server
wait_no_system
fi

# 4. The extension-test hook: extensionDevelopmentPath is an empty runner extension, so the code
#    under test is the installed .vsix. The extension host inherits the server's environment.
if [[ " $PARTS " == *" hook "* ]]; then
export HVDK_TEST_RESULT="$OUT/hook-result.json"
rm -f "$HVDK_TEST_RESULT"
start_server hook
t1=$(date +%s)
A="vscode-remote://127.0.0.1:$PORT"
PAYLOAD=$(node -e 'const [a,e]=process.argv.slice(1);console.log(encodeURIComponent(JSON.stringify([["extensionDevelopmentPath",a+e+"/test/runner"],["extensionTestsPath",a+e+"/dist/test/index.js"]])))' "$A" "$EXT")
if CS_URL="http://127.0.0.1:$PORT/?folder=$REPO&payload=$PAYLOAD" node "$EXT/test/runtests.mjs"; then
  echo "run-vscode-tests: extension-test hook part passed ($(( $(date +%s) - t1 )) s)"
else
  echo "run-vscode-tests: extension-test hook part FAILED (see $HVDK_TEST_RESULT, $OUT/server-hook.log, $OUT/dap-hook.log)" >&2
  status=1
fi
stop_server
wait_no_system
fi
echo "run-vscode-tests: done in $(( $(date +%s) - t0 )) s, status $status"
exit $status
