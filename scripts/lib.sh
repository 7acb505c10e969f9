# shellcheck shell=bash
# Shared by the build and test scripts; source it, relative to the sourcing script's own location:
#   . "$ROOT/scripts/lib.sh"
# It sets no shell options and runs nothing when sourced.

# apt_install_missing PACKAGE...: installs the Debian packages among PACKAGE... that dpkg does not list as
# installed, and nothing else, so a second call changes nothing. Runs apt-get with sudo unless already root,
# noninteractively, and `apt-get update` at most once per process (the first time something is missing).
# Returns apt-get's status when it fails; the packages' own output is discarded, apt-get's errors are not.
apt_install_missing() {
	local p missing=() sudo=""
	for p in "$@"; do
		case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) in
		*"install ok installed"*) ;;
		*) missing+=("$p") ;;
		esac
	done
	((${#missing[@]})) || return 0
	printf '==> installing apt packages: %s\n' "${missing[*]}" >&2
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	if [ -z "${_iotconn_apt_updated:-}" ]; then
		$sudo apt-get update -qq || return
		_iotconn_apt_updated=1
	fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# start_logged DIR NAME READY_PATTERN CMD...: runs CMD in the background with its output in the FIFO DIR/NAME.fifo,
# reads lines until one matches READY_PATTERN (60 s at most; exits 1 with what it read otherwise), then drains the
# rest into DIR/NAME.log. Sets $started_lines to what it read and $started_pid to CMD's PID, and appends CMD's and
# the drain's PIDs to the caller's array `pids`, whose owner stops them.
start_logged() {
	local dir=$1 name=$2 pattern=$3 line
	shift 3
	mkfifo "$dir/$name.fifo"
	"$@" >"$dir/$name.fifo" 2>&1 &
	started_pid=$!
	pids+=($!)
	exec 4<"$dir/$name.fifo"
	started_lines=""
	while IFS= read -r -t 60 line <&4; do
		started_lines+="$line"$'\n'
		case $line in *$pattern*) break ;; esac
	done
	case $started_lines in *$pattern*) ;; *)
		echo "$name did not start:"$'\n'"$started_lines" >&2
		exit 1
		;;
	esac
	cat <&4 >"$dir/$name.log" &
	pids+=($!)
	exec 4<&-
}

# matplotlib_python BUILD prints a python with matplotlib: a virtualenv under BUILD/fleet-venv, made once, with
# matplotlib from PyPI (a wheel, no compiler, no system packages). The benchmarks' plots use it.
matplotlib_python() {
	local venv="$1/fleet-venv"
	if [ ! -x "$venv/bin/python" ]; then
		python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install_missing python3-venv >&2 # Debian's python3
		python3 -m venv "$venv" >&2
	fi
	"$venv/bin/python" -c 'import matplotlib' 2>/dev/null ||
		"$venv/bin/python" -m pip install -q --disable-pip-version-check 'matplotlib>=3.7,<4' >&2
	echo "$venv/bin/python"
}
