# shellcheck shell=bash
# xenlab, the project's side: builds chaos's binaries and test guests, and packs them with dom0's
# /init, the test runner, the tests, the run's options and its command into the per-run overlay.

# The lab's binaries: static and not position-independent, for the one target installed. A
# static-pie binary relocates itself at every start (3,500 relocations, written over pages that
# each cost a copy-on-write fault, 170 us apiece in a PV dom0 under TCG): `chaos --version` took
# 218 ms against 128 ms without (and /bin/true 119 ms), measured in one lab boot (docs/COSTS.md).
# Naming the target keeps these flags off the build scripts and proc macros.
LAB_TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"

# Where the lab takes the project's binaries from: the static build if there is one.
bin_dir() {
	if [ -x "$REPO/target/$LAB_TARGET/release/chaos" ]; then
		echo "$REPO/target/$LAB_TARGET/release"
	else
		echo "$REPO/target/release"
	fi
}

find_cargo() {
	command -v cargo || { [ -x "$HOME/.cargo/bin/cargo" ] && echo "$HOME/.cargo/bin/cargo"; } || true
}

build_project() {
	if [ "${XENLAB_NO_BUILD:-0}" = 1 ]; then
		say "build: skipped (XENLAB_NO_BUILD=1)"
		return
	fi
	local cargo pkgs=(-p chaos-cli)
	cargo=$(find_cargo)
	[ -n "$cargo" ] || die "cargo not found (set XENLAB_NO_BUILD=1 to use existing binaries)"
	if "$cargo" metadata --no-deps --format-version 1 --manifest-path "$REPO/Cargo.toml" 2>/dev/null |
		grep -q '"name":"xendevd"'; then
		pkgs+=(-p xendevd)
	fi
	say "build: cargo build --release --target $LAB_TARGET ${pkgs[*]} (static)"
	(cd "$REPO" && "$cargo" build --release -q --target "$LAB_TARGET" "${pkgs[@]}") >&2 ||
		die "cargo build failed"
	# The scale harness (benches/src/bin/scale), for `bench scale` and the scale test only (its
	# LTO link would cost every other run time for nothing).
	if [ "${LAB_WANT_SCALE:-0}" = 1 ]; then
		say "build: cargo build --release --target $LAB_TARGET -p chaos-benches --bin scale"
		(cd "$REPO" && "$cargo" build --release -q --target "$LAB_TARGET" -p chaos-benches --bin scale) >&2 ||
			die "cargo build failed"
	fi
	# Lab-only probes of the library against real Xen (lab/tests/40-*, 60-*).
	say "build: cargo build --release --target $LAB_TARGET -p libchaos --examples"
	(cd "$REPO" && "$cargo" build --release -q --target "$LAB_TARGET" -p libchaos --examples) >&2 ||
		die "cargo build failed"
	if [ -f "$REPO/guests/build.sh" ]; then
		say "build: guests/build.sh"
		(cd "$REPO/guests" && bash ./build.sh) >&2 || die "guests/build.sh failed"
	fi
}

# Builds the overlay archive (init, its options, test runner, tests, project binaries, guests, the
# command) and the whole initramfs $RUN/initrd.img = base + overlay. $1 = file to run as /lab/cmd,
# or empty.
build_initrd() {
	local cmd=$1 ov=$RUN/overlay bin libs=() f bins
	bins=$(bin_dir)
	mkdir -p "$ov"/{etc/xenlab,lab/tests,usr/bin,usr/local/bin,guest}
	install -m 755 "$LAB/dom0/init" "$ov/init"
	dom0_options >"$ov/etc/xenlab/options"
	install -m 755 "$LAB/dom0/run-tests" "$LAB/dom0/demo" "$LAB/dom0/bench-scale" "$ov/usr/local/bin/"
	for f in "$LAB"/tests/*.sh; do install -m 644 "$f" "$ov/lab/tests/"; done
	[ -z "$cmd" ] || install -m 755 "$cmd" "$ov/lab/cmd"
	for bin in chaos chaosd xendevd scale; do
		f=$bins/$bin
		[ -x "$f" ] || continue
		install -m 755 "$f" "$ov/usr/bin/$bin"
		libs+=("$ov/usr/bin/$bin")
	done
	[ -x "$ov/usr/bin/chaos" ] || say "warning: $bins/chaos missing; dom0 has no chaos"
	# XENLAB_XENSTORED=patched (xen.sh); named xenstored, as tools that look for the daemon
	# by name (the scale harness) expect
	if [ -n "${XENSTORED_BIN:-}" ]; then
		install -D -m 755 "$XENSTORED_BIN" "$ov/opt/xenstored-patched/xenstored"
		install -D -m 755 "$XENCONSOLED_BIN" "$ov/opt/xenstored-patched/xenconsoled"
		libs+=("$ov/opt/xenstored-patched/xenstored" "$ov/opt/xenstored-patched/xenconsoled")
	fi
	# example name -> name in dom0
	for bin in xen_smoke:xen_smoke xs_lab_check:xs-lab-check daemon_rtt:daemon-rtt socket_floor:socket-floor; do
		f=$bins/examples/${bin%%:*}
		[ -x "$f" ] || continue
		install -m 755 "$f" "$ov/usr/bin/${bin#*:}"
		libs+=("$ov/usr/bin/${bin#*:}")
	done
	if [ ${#libs[@]} -gt 0 ]; then
		needed_libs "${libs[@]}" >"$RUN/libs" || die "cannot ship the project's binaries"
		mapfile -t libs < <(grep -vxF -f "$BASE/root.files" "$RUN/libs" || true)
		copy_libs "$ov" "${libs[@]}"
	fi
	if [ -d "$REPO/guests/out" ]; then
		for f in "$REPO"/guests/out/*; do [ -f "$f" ] && cp "$f" "$ov/guest/"; done
	fi
	cp "$BASE/initrd.img" "$RUN/initrd.img"
	cpio_of "$ov" >>"$RUN/initrd.img"
}

# Everything a boot needs, without booting: host tools, the base, the hypervisor, the project.
setup() {
	mkdir -p "$CACHE" "$WORK"
	ensure_host_tools
	exec 9>"$CACHE/.lock"
	flock 9
	cached_package_versions
	if [ "$XEN_FLAVOUR" = noxs ] || [ "$DOM0_XENSTORED" = patched ]; then
		choose_xen_source
	fi
	[ "$XEN_FLAVOUR" != noxs ] || pin_xen_packages
	ensure_base
	# shellcheck disable=SC2034 # the hypervisor QEMU boots (boot.sh)
	XEN_IMAGE=$BASE/xen
	flock -u 9
	exec 9>&-
	if [ "$XEN_FLAVOUR" = noxs ] || [ "$DOM0_XENSTORED" = patched ]; then
		# a build takes minutes: its own lock, so other checkouts' stock runs need not wait
		exec 9>"$CACHE/.xen-build.lock"
		flock 9
		[ "$XEN_FLAVOUR" != noxs ] || ensure_noxs_xen
		[ "$DOM0_XENSTORED" != patched ] || ensure_patched_xenstored
		exec 9>&-
	fi
	build_project
}
