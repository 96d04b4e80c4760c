# shellcheck shell=bash
# xenlab, the hypervisor QEMU boots: Debian's (XENLAB_XEN=stock, from the base), or Debian's source
# package with hypervisor-patches/xen-4.17/ applied (XENLAB_XEN=noxs), built here (`make -C xen`
# only) and cached in $CACHE/xen-noxs-<key>, key = source version + the patches + this recipe.
# Also the patched xenstored (XENLAB_XENSTORED=patched) from the same source, at the end.

# Bump when the way the patched hypervisor is built changes.
XEN_BUILD_FORMAT=2
XEN_PATCHES=$REPO/hypervisor-patches/xen-4.17
XEN_SRC=$CACHE/xen-source
# What `make -C xen` needs (command:package); dpkg-source unpacks Debian's source package.
XEN_BUILD_TOOLS=(gcc:gcc make:make flex:flex bison:bison m4:m4 python3:python3 dpkg-source:dpkg-dev
	xz:xz-utils patch:patch)

# apt with a sources list of its own (deb-src lines for the suites the lab's packages come from),
# its lists and cache under $XEN_SRC/apt: the system's apt configuration is left alone.
xen_src_apt() {
	local d=$XEN_SRC/apt
	if [ ! -f "$d/sources.list" ]; then
		mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
		{
			echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main"
			echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main"
		} >"$d/sources.list"
	fi
	"$@" -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
		-o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache"
}

# Versions of Debian's xen source package that the private index knows, newest first.
xen_src_versions() {
	xen_src_apt apt-cache showsrc xen 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -u |
		sort -r -V
}

# xen_src_fetch VERSION: the unpacked-ready files (.dsc, tarballs) of that source version in
# $XEN_SRC/VERSION/; false if the mirror does not have them.
xen_src_fetch() {
	local dir=$XEN_SRC/$1
	[ -f "$dir/.complete" ] && return 0
	rm -rf "$dir"
	mkdir -p "$dir"
	say "xen: apt-get source --download-only xen=$1"
	if ! (cd "$dir" && xen_src_apt apt-get source --download-only -q "xen=$1") >"$WORK/xen-source.log" 2>&1; then
		rm -rf "$dir"
		return 1
	fi
	touch "$dir/.complete"
}

# Sets XEN_SRC_VERSION: the version of Debian's xen source to build, the lab's Xen version (that of
# the xen-hypervisor package in PKG_VERSIONS) when the mirror has its source, else the newest
# source version it has (then dom0's Xen packages are pinned to that version too, see
# pin_xen_packages). Remembers the choice per lab version while the private index is unchanged.
choose_xen_source() {
	local want v memo
	want=$(sed -n 's/^xen-hypervisor-4.17-amd64=//p' <<<"$PKG_VERSIONS")
	[ -n "$want" ] || die "no xen-hypervisor-4.17-amd64 in the package list"
	mkdir -p "$XEN_SRC"
	memo=$XEN_SRC/chosen-for-$want
	if [ -s "$memo" ] && [ -f "$XEN_SRC/$(cat "$memo")/.complete" ]; then
		XEN_SRC_VERSION=$(cat "$memo")
		return
	fi
	if ! xen_src_versions | grep -qxF "$want"; then
		say "xen: apt-get update (private deb-src index in $XEN_SRC/apt)"
		xen_src_apt apt-get update -q >"$WORK/xen-source-update.log" 2>&1 ||
			die "apt-get update of the deb-src index failed, see $WORK/xen-source-update.log"
	fi
	XEN_SRC_VERSION=""
	for v in $(xen_src_versions); do
		# never newer than the lab's binaries: their tools are what dom0 runs
		dpkg --compare-versions "$v" le "$want" || continue
		if xen_src_fetch "$v"; then
			XEN_SRC_VERSION=$v
			break
		fi
		say "xen: the mirror has no source files for xen $v ($(grep -m1 -oE '[45][0-9]{2} +[A-Z][A-Za-z ]*[a-z]' "$WORK/xen-source.log" || echo "see $WORK/xen-source.log"))"
	done
	[ -n "$XEN_SRC_VERSION" ] ||
		die "no Debian xen source package <= $want can be downloaded (tried: $(xen_src_versions | tr '\n' ' ')); see $WORK/xen-source.log"
	echo "$XEN_SRC_VERSION" >"$memo"
}

# When the source is older than the lab's Xen packages, dom0 runs that version's Xen packages too
# (one Xen version in the machine): rewrites PKG_VERSIONS. The base key follows.
pin_xen_packages() {
	local want
	want=$(sed -n 's/^xen-hypervisor-4.17-amd64=//p' <<<"$PKG_VERSIONS")
	[ "$XEN_SRC_VERSION" = "$want" ] && return
	say "xen: source of $want not available; building $XEN_SRC_VERSION and pinning dom0's Xen packages to it"
	PKG_VERSIONS=$(awk -F= -v w="$want" -v s="$XEN_SRC_VERSION" '$2 == w { $0 = $1 "=" s } { print }' <<<"$PKG_VERSIONS")
}

# The patch files in apply order.
xen_patch_files() {
	find "$XEN_PATCHES" -maxdepth 1 -name '*.patch' | LC_ALL=C sort
}

# patched_build_dir NAME FORMAT PATCH...: prints the cache directory, $CACHE/NAME-<key>, of a
# build of Debian's source $XEN_SRC_VERSION with these patches by a recipe of that FORMAT; fails
# when there are no patches.
patched_build_dir() {
	local name=$1 format=$2 key
	shift 2
	[ $# -gt 0 ] || return 1
	key=$({
		echo "format=$format source=$XEN_SRC_VERSION"
		cat "$@"
	} | sha256sum | cut -c1-16)
	echo "$CACHE/$name-$key"
}

# cached_build OUT WHAT DESC: whether the build OUT is in the cache (if so, marked as used last).
cached_build() {
	[ -f "$1/KEY" ] || return 1
	touch "$1/KEY"
	say "$2: $3 cached ($(basename "$1"), source $XEN_SRC_VERSION)"
}

# unpack_patched DIR WHAT PATCH...: Debian's source $XEN_SRC_VERSION (with Debian's patches)
# in DIR/src, these patches applied; WHAT names the build in the messages.
unpack_patched() {
	local dir=$1 what=$2 p
	shift 2
	say "$what: unpacking Debian's source $XEN_SRC_VERSION (with Debian's patches)"
	dpkg-source -x "$XEN_SRC/$XEN_SRC_VERSION"/xen_*.dsc "$dir/src" >"$dir/unpack.log" 2>&1 ||
		die "dpkg-source -x failed, see $dir/unpack.log"
	for p in "$@"; do
		say "$what: applying ${p##*/}"
		patch -d "$dir/src" -p1 --quiet --forward <"$p" >>"$dir/patch.log" 2>&1 ||
			die "${p##*/} does not apply to xen $XEN_SRC_VERSION, see $dir/patch.log"
	done
}

# finish_patched_build OUT FORMAT SECS PATCHDIR PATCH...: OUT.new (the build's files) gets the
# patches and a KEY file and becomes OUT; of the builds named like OUT, the three used last stay.
finish_patched_build() {
	local out=$1 format=$2 secs=$3 dir=$4 old
	shift 4
	cp "$@" "$out.new/"
	{
		echo "format=$format source=$XEN_SRC_VERSION built=$(date -u +%FT%TZ) secs=$secs"
		sha256sum "$@" | sed "s|$dir/||"
	} >"$out.new/KEY"
	rm -rf "$out"
	mv "$out.new" "$out"
	while read -r old; do
		rm -rf "${old%/KEY}"
	done < <(find "$CACHE" -maxdepth 2 -path "${out%-*}-*/KEY" -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2-)
}

# Builds (or finds cached) the patched hypervisor; sets XEN_IMAGE.
ensure_noxs_xen() {
	local patches=() out tmp t0 t
	mapfile -t patches < <(xen_patch_files)
	out=$(patched_build_dir xen-noxs "$XEN_BUILD_FORMAT" "${patches[@]}") || die "no patches in $XEN_PATCHES"
	# shellcheck disable=SC2034 # the hypervisor QEMU boots (boot.sh)
	XEN_IMAGE=$out/xen
	cached_build "$out" xen "patched hypervisor" && return
	ensure_tools "${XEN_BUILD_TOOLS[@]}"
	tmp=$WORK/xen-build.$$
	rm -rf "$tmp"
	mkdir -p "$tmp"
	unpack_patched "$tmp" xen "${patches[@]}"
	# Debian's hypervisor configuration (debian/rules: xen-kconfig, then olddefconfig)
	cp "$tmp/src/debian/xen-kconfig" "$tmp/src/xen/.config"
	# -noxs: `xl info` (xen_extra) and /sys/hypervisor/version/extra say which Xen this is
	local make_args=(-C "$tmp/src/xen" PYTHON=python3 XEN_VENDORVERSION=-noxs)
	t0=${EPOCHREALTIME/./}
	make "${make_args[@]}" olddefconfig >"$tmp/build.log" 2>&1 || die "make olddefconfig failed, see $tmp/build.log"
	grep -q '^CONFIG_NOXS=y' "$tmp/src/xen/.config" || die "CONFIG_NOXS is not set after olddefconfig"
	say "xen: make -C xen -j$(nproc) (log $tmp/build.log)"
	make_progress "$tmp/build.log" nice make "${make_args[@]}" -j"$(nproc)" ||
		die "make -C xen failed, see $tmp/build.log"
	secs_since "$t0" t
	mkdir -p "$out.new"
	cp "$tmp/src/xen/xen" "$out.new/xen"
	cp "$tmp/src/xen/.config" "$out.new/config"
	# one build is ~3 MB: the three used last are kept
	finish_patched_build "$out" "$XEN_BUILD_FORMAT" "$t" "$XEN_PATCHES" "${patches[@]}"
	rm -rf "$tmp"
	say "xen: patched hypervisor built in ${t}s ($(basename "$out"))"
}

# make_progress LOG CMD...: runs the build CMD, output to LOG, saying every 100 compiled files
# how far it got (a build compiles about 440).
make_progress() {
	local log=$1 n=0 line
	shift
	"$@" 2>&1 | while IFS= read -r line; do
		printf '%s\n' "$line" >>"$log"
		case $line in
		*"  CC "* | *"  AS "*)
			n=$((n + 1))
			[ $((n % 100)) -ne 0 ] || say "xen: $n files compiled"
			;;
		esac
	done
}

# ------------------------------------------------------------------- the patched xenstored
# XENLAB_XENSTORED=patched: the C xenstored and xenconsoled of the same Debian source with
# xenstored-patches/xen-4.17 applied, cached in $CACHE/xenstored-patched-<key>. Only their two
# daemons are compiled, without Xen's configure: against the headers and static libraries of that
# version's libxen-dev, so the binaries need nothing from dom0 but libc and run beside Debian's
# other Xen tools.
XENSTORED_BUILD_FORMAT=3
XENSTORED_PATCHES=$REPO/xenstored-patches/xen-4.17
XENSTORED_BUILD_TOOLS=(gcc:gcc dpkg-source:dpkg-dev xz:xz-utils patch:patch)

# Builds (or finds cached) the patched xenstored and xenconsoled; sets XENSTORED_BIN and
# XENCONSOLED_BIN.
ensure_patched_xenstored() {
	local patches=() out tmp t0 t f objs=()
	mapfile -t patches < <(find "$XENSTORED_PATCHES" -maxdepth 1 -name '*.patch' | LC_ALL=C sort)
	out=$(patched_build_dir xenstored-patched "$XENSTORED_BUILD_FORMAT" "${patches[@]}") ||
		die "no patches in $XENSTORED_PATCHES"
	# shellcheck disable=SC2034 # shipped into dom0 (build.sh)
	XENSTORED_BIN=$out/xenstored XENCONSOLED_BIN=$out/xenconsoled
	cached_build "$out" xenstored "patched xenstored" && return
	ensure_tools "${XENSTORED_BUILD_TOOLS[@]}"
	t0=${EPOCHREALTIME/./}
	tmp=$WORK/xenstored-build.$$
	rm -rf "$tmp"
	mkdir -p "$tmp"
	unpack_patched "$tmp" xenstored "${patches[@]}"
	say "xenstored: apt-get download libxen-dev=$XEN_SRC_VERSION (headers, static libraries)"
	if ! (cd "$tmp" && apt-get download -q "libxen-dev=$XEN_SRC_VERSION") >"$tmp/download.log" 2>&1; then
		apt-get update -q >>"$tmp/download.log" 2>&1 || true
		(cd "$tmp" && apt-get download -q "libxen-dev=$XEN_SRC_VERSION") >>"$tmp/download.log" 2>&1 ||
			die "apt-get download libxen-dev=$XEN_SRC_VERSION failed, see $tmp/download.log"
	fi
	dpkg -x "$tmp"/libxen-dev_*.deb "$tmp/dev"
	# The one line of configure's tools/config.h that these files use.
	echo '#define INCLUDE_ENDIAN_H <endian.h>' >"$tmp/config.h"
	local x=$tmp/src/tools/xenstore c=$tmp/src/tools/console/daemon names cflags
	# Xen's tools flags (tools/Rules.mk, Config.mk) and Debian's directories
	cflags=(-O2 -g -std=gnu99 -fno-strict-aliasing -Wall -include "$tmp/config.h"
		-I"$tmp/dev/usr/include" -I"$tmp/src/tools/include" -D__XEN_TOOLS__
		-D__XEN_INTERFACE_VERSION__=__XEN_LATEST_INTERFACE_VERSION__ -D_FILE_OFFSET_BITS=64
		-D_LARGEFILE_SOURCE -D_LARGEFILE64_SOURCE -DXEN_RUN_STORED='"/var/run/xenstored"'
		-DXEN_RUN_DIR='"/var/run/xen"' -DXEN_LOG_DIR='"/var/log/xen"')
	# xenstored's objects as its Makefile.common lists them, and the Linux one
	names=$(sed -n 's/^XENSTORED_OBJS-y *+*:*= *//p' "$x/Makefile.common" | xargs)
	[ -n "$names" ] || die "no XENSTORED_OBJS-y in $x/Makefile.common"
	say "xenstored: gcc ($names xenstored_posix.o; log $tmp/build.log)"
	for f in $names xenstored_posix.o; do
		gcc "${cflags[@]}" -I"$x/include" -c "$x/${f%.o}.c" -o "$tmp/$f" >>"$tmp/build.log" 2>&1 ||
			die "gcc ${f%.o}.c failed, see $tmp/build.log"
		objs+=("$tmp/$f")
	done
	gcc -o "$tmp/xenstored" "${objs[@]}" -L"$tmp/dev/usr/lib/x86_64-linux-gnu" -Wl,-Bstatic \
		-lxenevtchn -lxengnttab -lxenctrl -lxencall -lxenforeignmemory -lxendevicemodel \
		-lxentoollog -lxentoolcore -Wl,-Bdynamic -lrt -lm >>"$tmp/build.log" 2>&1 ||
		die "linking xenstored failed, see $tmp/build.log"
	# xenconsoled (tools/console/daemon/Makefile's OBJS-y), patched by 0004, with libxenstore
	# compiled here as its shared build is (USE_PTHREAD): libxen-dev's libxenstore.a has no
	# reader thread, so the event that follows a watch's reply is read as the next request's
	# reply, and xenconsoled's second watch fails
	objs=()
	say "xenconsoled: gcc (main.o io.o utils.o, libxenstore's xs.o xs_lib.o)"
	for f in "$c/main" "$c/io" "$c/utils" "$tmp/src/tools/libs/store/xs" "$x/xs_lib"; do
		gcc "${cflags[@]}" -DUSE_PTHREAD -iquote "$x" -c "$f.c" -o "$tmp/console-${f##*/}.o" \
			>>"$tmp/build.log" 2>&1 || die "gcc $f.c failed, see $tmp/build.log"
		objs+=("$tmp/console-${f##*/}.o")
	done
	gcc -o "$tmp/xenconsoled" "${objs[@]}" -L"$tmp/dev/usr/lib/x86_64-linux-gnu" -Wl,-Bstatic \
		-lxenctrl -lxenevtchn -lxengnttab -lxenforeignmemory -lxencall -lxendevicemodel \
		-lxentoollog -lxentoolcore -Wl,-Bdynamic -lutil -lrt -lm >>"$tmp/build.log" 2>&1 ||
		die "linking xenconsoled failed, see $tmp/build.log"
	# (grep reads all of nm's output: with -q, nm could die of SIGPIPE and fail the pipeline)
	nm "$tmp/xenconsoled" | grep ' read_thread$' >/dev/null ||
		die "xenconsoled: libxenstore built without its reader thread"
	secs_since "$t0" t
	mkdir -p "$out.new"
	cp "$tmp/xenstored" "$tmp/xenconsoled" "$out.new/"
	finish_patched_build "$out" "$XENSTORED_BUILD_FORMAT" "$t" "$XENSTORED_PATCHES" "${patches[@]}"
	rm -rf "$tmp"
	say "xenstored: patched xenstored and xenconsoled built in ${t}s ($(basename "$out"))"
}
