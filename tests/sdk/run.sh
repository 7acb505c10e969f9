#!/usr/bin/env bash
# The official Azure IoT device SDKs, unchanged, against hubsim: Node.js (azure-iot-device with azure-iot-device-mqtt
# and azure-iot-device-amqp, and the provisioning SDK azure-iot-provisioning-device(-mqtt) against hubsim's DPS) and
# Python (azure-iot-device 2.x, its IoTHubDeviceClient and ProvisioningDeviceClient). Run from the repo root:
# bash tests/sdk/run.sh. The Node AMQP-over-WebSocket suite binds 127.0.0.1:443 (the port that SDK always dials):
# run as root or with CAP_NET_BIND_SERVICE.
# Installs what is missing (a second run installs nothing), then runs both suites; exits non-zero if either fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
SDK="$ROOT/tests/sdk"
VENV="$ROOT/build/sdk-venv"
HUBSIM="$ROOT/build/bin/iotconn-hubsim"
export PATH="/usr/local/go/bin:$PATH"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export HUBSIM_BIN="$HUBSIM"

say() { printf -- '--> %s\n' "$*"; }

# digest FILE... prints one digest of the files, to tell whether an install is current.
digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

if [ ! -x "$HUBSIM" ]; then
	say "building $HUBSIM (not built yet)"
	go build -o "$HUBSIM" ./hubsim/cmd/iotconn-hubsim
fi

# Node SDK: npm ci from the committed lock file, redone only when the lock file changed.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
	say "installing Node.js and npm (apt)"
	apt_install_missing nodejs npm
fi
node_stamp="$SDK/node/node_modules/.iotconn-lock-sha256"
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$(digest "$SDK/node/package-lock.json")" ]; then
	say "installing the Node SDK (npm ci in tests/sdk/node)"
	(cd "$SDK/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	digest "$SDK/node/package-lock.json" >"$node_stamp"
fi

# Python SDK: a virtualenv in build/sdk-venv from tests/sdk/python/requirements.txt, redone when that changes.
if [ ! -x "$VENV/bin/python" ]; then
	say "creating the Python virtualenv $VENV"
	python3 -m venv "$VENV" 2>/dev/null || {
		say "python3 -m venv failed; installing python3-venv (apt)"
		apt_install_missing python3-venv
		python3 -m venv "$VENV"
	}
fi
py_stamp="$VENV/.iotconn-requirements-sha256"
if [ "$(cat "$py_stamp" 2>/dev/null)" != "$(digest "$SDK/python/requirements.txt")" ]; then
	say "installing the Python SDK and pytest into $VENV"
	"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$SDK/python/requirements.txt"
	digest "$SDK/python/requirements.txt" >"$py_stamp"
fi

nodever() { node -p "require('$SDK/node/node_modules/$1/package.json').version"; }
say "Node SDK $(nodever azure-iot-device) (mqtt $(nodever azure-iot-device-mqtt), amqp $(nodever azure-iot-device-amqp)) against hubsim, provisioning SDK $(nodever azure-iot-provisioning-device) against hubsim DPS"
node_rc=0
(cd "$SDK/node" && node --test sdk.test.js sdk_amqp.test.js provisioning.test.js) || node_rc=$?

say "Python SDK $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("azure-iot-device"))') against hubsim"
py_rc=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$SDK/python" || py_rc=$?

if [ "$node_rc" -ne 0 ] || [ "$py_rc" -ne 0 ]; then
	say "FAILED: Node SDK suite exit $node_rc, Python SDK suite exit $py_rc"
	exit 1
fi
say "both official SDKs passed against hubsim"
