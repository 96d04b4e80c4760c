# shellcheck shell=bash
# xenlab, host side: the tools xenlab runs on the host, and the Debian packages dom0 is made of
# (resolved with apt-cache, fetched with apt-get download; nothing is installed from them).

# Debian packages unpacked into the base (with Debian's current kernel, found at run time).
DEB_PKGS=(xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils
	libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenmisc4.17 libxenstore4
	libxentoollog1 libxendevicemodel1 libxenhypfs1 libxentoolcore1 libyajl2
	busybox-static grub-xen-host strace libunwind8)
# command:package pairs the host needs
HOST_TOOLS=(qemu-system-x86_64:qemu-system-x86 cpio:cpio xz:xz-utils gzip:gzip flock:util-linux
	mkfs.ext4:e2fsprogs)

# apt_install PKG...: installs host packages (apt-get update first when that is what it takes).
apt_install() {
	[ "$(id -u)" = 0 ] || die "missing $*; install them (apt-get install $*) or run as root"
	say "apt: installing $*"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "$@" >"$WORK/apt-install.log" 2>&1 || {
		apt-get update -q >"$WORK/apt-update.log" 2>&1 || die "apt-get update failed, see $WORK/apt-update.log"
		apt-get install -y -q --no-install-recommends "$@" >"$WORK/apt-install.log" 2>&1 ||
			die "apt-get install failed, see $WORK/apt-install.log"
	}
}

# ensure_tools COMMAND:PACKAGE...: installs the packages of the commands the host lacks.
ensure_tools() {
	local missing=() entry
	for entry in "$@"; do
		command -v "${entry%%:*}" >/dev/null || missing+=("${entry#*:}")
	done
	[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

ensure_host_tools() { ensure_tools "${HOST_TOOLS[@]}"; }

# Prints "package=version" for each package apt would install (one per line, sorted).
candidate_versions() {
	apt-cache policy "$@" 2>/dev/null |
		awk '/^[^ ]/ { p = $1; sub(/:$/, "", p) } /^  Candidate:/ { print p "=" $2 }' | sort
}

# Fills PKG_VERSIONS with the versions of DEB_PKGS and of Debian's current kernel.
resolve_packages() {
	local kernel_pkg=""
	kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
	if [ -n "$kernel_pkg" ]; then
		PKG_VERSIONS=$(candidate_versions "${DEB_PKGS[@]}" "$kernel_pkg")
	else
		PKG_VERSIONS=""
	fi
	if [ -z "$kernel_pkg" ] || grep -q '=(none)$' <<<"$PKG_VERSIONS" ||
		[ "$(wc -l <<<"$PKG_VERSIONS")" -ne $((${#DEB_PKGS[@]} + 1)) ]; then
		[ "${1:-}" = retry ] && die "apt does not know these packages: $(grep '=(none)$' <<<"$PKG_VERSIONS" | tr '\n' ' ')"
		[ "$(id -u)" = 0 ] || die "apt package lists are missing or stale; run apt-get update as root"
		say "apt: updating package lists"
		apt-get update -q >"$WORK/apt-update.log" 2>&1 || die "apt-get update failed, see $WORK/apt-update.log"
		resolve_packages retry
	fi
}

# deb_glob PACKAGE=VERSION: the cache/debs file name pattern of that package.
deb_glob() {
	local f=${1/=/_}
	echo "${f//:/%3a}_*.deb"
}

# Downloads the .debs of PKG_VERSIONS into cache/debs (kept across base rebuilds).
download_packages() {
	local want=() pv
	mkdir -p "$CACHE/debs"
	for pv in $PKG_VERSIONS; do
		compgen -G "$CACHE/debs/$(deb_glob "$pv")" >/dev/null || want+=("$pv")
	done
	[ ${#want[@]} -eq 0 ] && return
	say "apt: downloading ${#want[@]} packages"
	(cd "$CACHE/debs" && apt-get download -q "${want[@]}") >"$WORK/apt-download.log" 2>&1 || {
		[ "$(id -u)" = 0 ] || die "apt-get download failed, see $WORK/apt-download.log"
		say "apt: download failed, updating package lists and retrying"
		apt-get update -q >"$WORK/apt-update.log" 2>&1 || die "apt-get update failed"
		resolve_packages
		(cd "$CACHE/debs" && apt-get download -q "${want[@]%%=*}") >"$WORK/apt-download.log" 2>&1 ||
			die "apt-get download failed, see $WORK/apt-download.log"
	}
}

# Resolves the package versions, reusing the last answer while apt's lists, dpkg's database and
# the package list are unchanged (apt-cache takes seconds on a busy machine); sets PKG_VERSIONS.
cached_package_versions() {
	local stamp
	stamp=$({
		echo "${DEB_PKGS[*]}"
		stat -c '%n %s %Y' /var/lib/apt/lists/* /var/lib/dpkg/status 2>/dev/null
	} | sha256sum | cut -c1-16)
	if [ -s "$CACHE/resolved-$stamp" ]; then
		PKG_VERSIONS=$(cat "$CACHE/resolved-$stamp")
		return
	fi
	resolve_packages
	rm -f "$CACHE"/resolved-*
	echo "$PKG_VERSIONS" >"$CACHE/resolved-$stamp"
}
