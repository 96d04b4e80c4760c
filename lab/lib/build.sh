# shellcheck shell=bash
# xenlab, the project's side: builds chaos's binaries and test guests, and packs them with dom0's
# /init, the test runner, the tests, the run's options and its command into the per-run overlay.

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
	say "build: cargo build --release ${pkgs[*]}"
	(cd "$REPO" && "$cargo" build --release -q "${pkgs[@]}") >&2 || die "cargo build failed"
	# Lab-only probes of the library against real Xen (lab/tests/40-*, 60-*).
	say "build: cargo build --release -p libchaos --examples"
	(cd "$REPO" && "$cargo" build --release -q -p libchaos --examples) >&2 || die "cargo build failed"
	if [ -f "$REPO/guests/build.sh" ]; then
		say "build: guests/build.sh"
		(cd "$REPO/guests" && bash ./build.sh) >&2 || die "guests/build.sh failed"
	fi
}

# Builds the overlay archive (init, its options, test runner, tests, project binaries, guests, the
# command) and the whole initramfs $RUN/initrd.img = base + overlay. $1 = file to run as /lab/cmd,
# or empty.
build_initrd() {
	local cmd=$1 ov=$RUN/overlay bin libs=() f
	mkdir -p "$ov"/{etc/xenlab,lab/tests,usr/bin,usr/local/bin,guest}
	install -m 755 "$LAB/dom0/init" "$ov/init"
	dom0_options >"$ov/etc/xenlab/options"
	install -m 755 "$LAB/dom0/run-tests" "$LAB/dom0/demo" "$ov/usr/local/bin/"
	for f in "$LAB"/tests/*.sh; do install -m 644 "$f" "$ov/lab/tests/"; done
	[ -z "$cmd" ] || install -m 755 "$cmd" "$ov/lab/cmd"
	for bin in chaos chaosd xendevd; do
		f=$REPO/target/release/$bin
		[ -x "$f" ] || continue
		install -m 755 "$f" "$ov/usr/bin/$bin"
		libs+=("$ov/usr/bin/$bin")
	done
	[ -x "$ov/usr/bin/chaos" ] || say "warning: $REPO/target/release/chaos missing; dom0 has no chaos"
	# example name -> name in dom0
	for bin in xen_smoke:xen_smoke xs_lab_check:xs-lab-check; do
		f=$REPO/target/release/examples/${bin%%:*}
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
	ensure_base
	# shellcheck disable=SC2034 # the hypervisor QEMU boots (boot.sh)
	XEN_IMAGE=$BASE/xen
	flock -u 9
	exec 9>&-
	build_project
}
