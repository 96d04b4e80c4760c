# shellcheck shell=bash
# xenlab, the base image (cached in $CACHE/base-<key>): the Xen image, the dom0 kernel, and the base
# archive of dom0's root, all made from the Debian packages of host.sh.

# Bump when the way the base image is built changes, so old caches are not reused.
BASE_FORMAT=5
# dom0 kernel modules, in insmod order (dependencies first)
DOM0_MODULES=(xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc xen-netback xen-blkback loop llc stp bridge tun)
# The disk guest's modules (blkfront, ext4 and what ext4 needs), in insmod order
DISK_GUEST_MODULES=(crc32c_generic crc16 mbcache jbd2 ext4 xen-blkfront)
# Size of the disk guest's ext4 image (MiB): Debian's vmlinuz, the disk initramfs, busybox
DISK_IMAGE_MIB=32

# Shared libraries (absolute paths on the host) needed by the given ELF files, one per line.
# Fails, naming them, if the host lacks some.
needed_libs() {
	local f out all=""
	for f in "$@"; do
		out=$(ldd "$f" 2>&1) || continue # static binaries, scripts
		if grep -q 'not found' <<<"$out"; then
			echo "$f needs libraries the host lacks: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')" >&2
			return 1
		fi
		all+=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")$'\n'
	done
	sed '/^$/d' <<<"$all" | sort -u
}

# Copies host libraries into root $1 at the same paths (following symlinks), skipping those present.
copy_libs() {
	local root=$1 lib
	shift
	for lib in "$@"; do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

# newc cpio of directory $1 on stdout, files owned by root, stable order
cpio_of() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet)
}

# Pads file $1 with zeros to a multiple of 512 bytes, so the next concatenated archive starts aligned
# (Linux needs uncompressed cpio archives 4-byte aligned within the initramfs; it skips the zeros).
pad512() {
	local size
	size=$(stat -c %s "$1")
	[ $((size % 512)) -eq 0 ] || head -c $((512 - size % 512)) /dev/zero >>"$1"
}

# Uncompressed ELF vmlinux from a bzImage ($1) into $2 (Xen's and libxenguest's decompression of a
# 66 MB kernel costs seconds under TCG).
extract_vmlinux() {
	local off
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | head -n 1 | cut -d: -f1)
	[ -n "$off" ] || die "no xz payload in $1"
	# (xz stops at the end of its stream: no pipe, so tail's SIGPIPE is no error)
	xz -dc --single-stream < <(tail -c +$((off + 1)) "$1" || true) >"$2"
	[ "$(head -c 4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ] || die "extracted $2 is not an ELF file"
}

# install_module KO_DIR NAME DEST: kernel module NAME from KO_DIR (searched), uncompressed, to DEST.
install_module() {
	local f
	f=$(find "$1" -name "$2.ko*" | head -n 1)
	[ -n "$f" ] || die "kernel module $2 not found in $1"
	case $f in
	*.xz) xz -dc "$f" >"$3" ;;
	*) cp "$f" "$3" ;;
	esac
}

# build_guest_material PKG OUT KVER: /guest's content (kernels, marker initramfs, PV GRUB) into OUT.
build_guest_material() {
	local pkg=$1 out=$2 kver=$3 guestfs a
	say "base: guest initramfs"
	guestfs=$WORK/base.$$/guestfs
	mkdir -p "$guestfs"/{bin,proc,sys,dev}
	cp "$pkg/bin/busybox" "$guestfs/bin/"
	for a in sh echo cat cut mount poweroff reboot uname sleep mkdir chmod; do ln -s busybox "$guestfs/bin/$a"; done
	cp "$LAB/dom0/guest-init" "$guestfs/init"
	chmod 755 "$guestfs/init"
	cpio_of "$guestfs" | gzip -9 >"$out/initrd.gz"
	# the network guest: the same plus netfront (a module in Debian's kernel) and ip/ping
	for a in insmod ip ping grep ls dmesg tail tr; do ln -s busybox "$guestfs/bin/$a"; done
	mkdir -p "$guestfs/lib/modules"
	install_module "$pkg/lib/modules/$kver" xen-netfront "$guestfs/lib/modules/xen-netfront.ko"
	cp "$LAB/dom0/guest-net-init" "$guestfs/init"
	chmod 755 "$guestfs/init"
	cpio_of "$guestfs" | gzip -9 >"$out/initrd-net.gz"
	cp "$pkg/boot/vmlinuz-$kver" "$out/vmlinuz"
	cp "$pkg"/usr/lib/grub-xen/grub-x86_64-xen.bin "$out/" 2>/dev/null || true
	build_disk_material "$pkg" "$out" "$kver"
}

# build_disk_material PKG OUT KVER: the disk guest (OUT/initrd-disk.gz: blkfront and ext4, mounts
# root= and switches to it) and its root (OUT/disk.img: ext4 holding busybox, an init that prints
# DISK-HELLO and powers off, and /boot with Debian's vmlinuz, that initramfs and a grub.cfg for
# PV GRUB). mkfs.ext4 -d fills the file system from a directory, as root, without mounting.
build_disk_material() {
	local pkg=$1 out=$2 kver=$3 fs root a m
	say "base: disk guest (initramfs, ${DISK_IMAGE_MIB} MiB ext4 image)"
	fs=$WORK/base.$$/diskfs
	mkdir -p "$fs"/{bin,proc,sys,dev,newroot,lib/modules}
	cp "$pkg/bin/busybox" "$fs/bin/"
	for a in sh echo cat cut mount umount mkdir ls sleep insmod switch_root poweroff uname; do
		ln -s busybox "$fs/bin/$a"
	done
	for m in "${DISK_GUEST_MODULES[@]}"; do
		install_module "$pkg/lib/modules/$kver" "$m" "$fs/lib/modules/$m.ko"
	done
	install -m 755 "$LAB/dom0/guest-disk-init" "$fs/init"
	cpio_of "$fs" | gzip -9 >"$out/initrd-disk.gz"

	root=$WORK/base.$$/diskroot
	mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,boot/grub}
	cp "$pkg/bin/busybox" "$root/bin/"
	for a in sh echo cat cut grep tail mount sync poweroff uname; do ln -s busybox "$root/bin/$a"; done
	install -m 755 "$LAB/dom0/guest-disk-rootinit" "$root/sbin/init"
	cp "$pkg/boot/vmlinuz-$kver" "$root/boot/vmlinuz"
	cp "$out/initrd-disk.gz" "$root/boot/initrd-disk.gz"
	cat >"$root/boot/grub/grub.cfg" <<-EOF
	set timeout=0
	menuentry 'chaos lab disk' {
	    linux /boot/vmlinuz root=/dev/xvda ro console=hvc0 quiet
	    initrd /boot/initrd-disk.gz
	}
	EOF
	rm -f "$out/disk.img"
	mkfs.ext4 -q -F -L chaos-lab -E root_owner=0:0 -d "$root" "$out/disk.img" "${DISK_IMAGE_MIB}M" ||
		die "mkfs.ext4 of the disk image failed"
}

# build_dom0_root PKG ROOT KVER: dom0's root file system (busybox, Xen's tools and libraries,
# strace, bash, host libraries, kernel modules) into ROOT.
build_dom0_root() {
	local pkg=$1 root=$2 kver=$3 a f m libs=()
	say "base: dom0 root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib64,etc/xenlab,proc,sys,dev,run,tmp,root,var/lib,var/log}
	ln -s ../run "$root/var/run"
	ln -s ../run/lock "$root/var/lock"
	cp "$pkg/bin/busybox" "$root/bin/"
	for a in $("$root/bin/busybox" --list); do
		[ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
	done
	# Xen's tools at their Debian paths, daemons in PATH
	mkdir -p "$root/usr/lib" "$root/usr/lib/x86_64-linux-gnu"
	cp -a "$pkg/usr/lib/xen-4.17" "$root/usr/lib/"
	cp -a "$pkg"/usr/lib/x86_64-linux-gnu/lib{xen,xl,yajl,unwind}* "$root/usr/lib/x86_64-linux-gnu/"
	cp -a "$pkg"/usr/bin/xenstore* "$pkg/usr/bin/strace" "$root/usr/bin/"
	cp -a "$pkg/etc/xen" "$root/etc/"
	for f in "$root"/usr/lib/xen-4.17/bin/*; do ln -sf "/usr/lib/xen-4.17/bin/${f##*/}" "$root/usr/sbin/${f##*/}"; done
	# hotplug scripts (/etc/xen/scripts) are bash; their locks (locking.sh) take flock(1),
	# which Debian's busybox lacks
	cp /bin/bash "$root/bin/bash"
	cp /usr/bin/flock "$root/usr/bin/flock"
	# host libraries: the host is Debian bookworm like the packages
	LD_LIBRARY_PATH=$pkg/usr/lib/x86_64-linux-gnu:$pkg/usr/lib/xen-4.17/lib/x86_64-linux-gnu \
		needed_libs "$pkg"/usr/lib/xen-4.17/bin/* "$pkg"/usr/bin/xenstore* "$pkg/usr/bin/strace" /bin/bash /usr/bin/flock \
		>"$WORK/base.$$/libs" || die "cannot ship Xen's tools: host libraries missing"
	mapfile -t libs < <(grep -v "^$pkg/" "$WORK/base.$$/libs")
	# glibc dlopen()s libgcc_s for pthread_cancel; without it every xl aborts on exit (rc 134)
	copy_libs "$root" "${libs[@]}" /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libgcc_s.so.1

	mkdir -p "$root/lib/modules/$kver"
	: >"$root/etc/xenlab/modules.order"
	for m in "${DOM0_MODULES[@]}"; do
		install_module "$pkg/lib/modules/$kver" "$m" "$root/lib/modules/$kver/$m.ko"
		echo "$m.ko" >>"$root/etc/xenlab/modules.order"
	done
	echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
	echo 'root:x:0:' >"$root/etc/group"
	echo 'xenlab' >"$root/etc/hostname"
}

# Builds the cached base into $1: Xen image, dom0 kernel, and the base archive of dom0's root
# (with /guest: kernels, marker initramfs, PV GRUB).
build_base() {
	local out=$1 tmp pkg kver root pv deb glob
	tmp=$WORK/base.$$
	rm -rf "$tmp"
	mkdir -p "$tmp/pkg" "$tmp/out/guest"
	pkg=$tmp/pkg
	say "base: extracting packages"
	for pv in $PKG_VERSIONS; do
		glob=$(deb_glob "$pv")
		for deb in "$CACHE"/debs/$glob; do dpkg-deb -x "$deb" "$pkg"; done
	done
	kver=$(basename "$(ls -d "$pkg"/lib/modules/*)")
	say "base: Xen $(grep -o '^xen-hypervisor-4.17-amd64=[^ ]*' <<<"$PKG_VERSIONS" | cut -d= -f2), kernel $kver"

	# QEMU's multiboot loader takes the uncompressed ELF hypervisor
	gunzip -c "$pkg"/boot/xen-4.17-amd64.gz >"$tmp/out/xen"
	extract_vmlinux "$pkg/boot/vmlinuz-$kver" "$tmp/out/dom0-vmlinux"
	build_guest_material "$pkg" "$tmp/out/guest" "$kver"
	cp "$tmp/out/dom0-vmlinux" "$tmp/out/guest/vmlinux"

	root=$tmp/root
	build_dom0_root "$pkg" "$root" "$kver"
	(cd "$root" && find . \( -type f -o -type l \) | sed 's/^\.//' | LC_ALL=C sort) >"$tmp/out/root.files"

	say "base: packing the archive"
	# uncompressed: under TCG Linux copies 100 MB faster than it inflates 30 MB (measured)
	mv "$tmp/out/guest" "$root/guest"
	cpio_of "$root" >"$tmp/out/initrd.img"
	pad512 "$tmp/out/initrd.img"
	ln "$root/guest/vmlinuz" "$tmp/out/vmlinuz"
	echo "$BASE_KEY_TEXT" >"$tmp/out/KEY"
	rm -rf "$out"
	mv "$tmp/out" "$out"
	rm -rf "$tmp"
}

# Makes sure the base for PKG_VERSIONS exists; sets BASE.
ensure_base() {
	BASE_KEY_TEXT="format=$BASE_FORMAT
$PKG_VERSIONS
$(dpkg-query -W bash libc6 libgcc-s1 util-linux 2>/dev/null)
$(sha256sum "$LAB/dom0/guest-init" "$LAB/dom0/guest-net-init" "$LAB/dom0/guest-disk-init" \
		"$LAB/dom0/guest-disk-rootinit" | cut -d' ' -f1)"
	local key old
	key=$(sha256sum <<<"$BASE_KEY_TEXT" | cut -c1-16)
	BASE=$CACHE/base-$key
	if [ -f "$BASE/KEY" ]; then
		touch "$BASE/KEY"
		say "base: cached ($(basename "$BASE"))"
		return
	fi
	download_packages
	build_base "$BASE"
	# Bases are ~250 MB each. Keep the three used last: a cache shared by checkouts of different
	# xenlab versions (XENLAB_CACHE), or by stock and noxs runs (whose Xen packages may be pinned to
	# another version, see xen.sh), must not delete the other's base on every run.
	while read -r old; do
		rm -rf "${old%/KEY}"
	done < <(find "$CACHE" -maxdepth 2 -path "$CACHE/base-*/KEY" -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2-)
	say "base: built"
}
