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
