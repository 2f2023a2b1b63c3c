#!/usr/bin/env bash
# The base images the Dockerfiles build FROM, and local stand-ins for them where no registry answers.
#
#   scripts/base-images.sh args     print the `--build-arg` options `docker build` needs here, one per line:
#                                   none where the public bases are present or can be pulled; otherwise
#                                   the stand-ins below (made first, then cached in the engine's data root)
#   scripts/base-images.sh make     make (or refresh) the stand-ins, whatever the registries say
#
# The public bases, the Dockerfiles' defaults:
#   BUILDER_IMAGE  rust:1.89-bookworm                       Rust toolchain on Debian 12 with build tools
#   RUNTIME_IMAGE  gcr.io/distroless/cc-debian12            glibc, libgcc, libstdc++, OpenSSL, CA certs
#   PYTHON_IMAGE   python:3.11-slim-bookworm                (the tests' application image only)
# Their stand-ins, all from Debian 12 (bookworm) packages of $DEBIAN_MIRROR (default deb.debian.org):
#   localhost/interceptor-base/rust:bookworm       debootstrap minbase + build-essential, pkg-config and
#                                                  the -dev packages + this machine's own Rust toolchain
#                                                  (`rustc --print sysroot`) in /usr/local, as in rust:,
#                                                  and the machine's extra CAs (/usr/local/share/ca-certificates)
#   localhost/interceptor-base/cc-debian12:latest  what distroless/cc holds, unpacked from Debian's
#                                                  packages: libc6, libgcc-s1, libgomp1, libstdc++6, libssl3,
#                                                  tzdata, netbase, CA certificates, users root, nonroot
#                                                  (65532) and nobody; no shell, no package manager
#   localhost/interceptor-base/python:bookworm     debootstrap minbase + python3
# Needs root (debootstrap, chroot) and the engine of scripts/docker.sh (DOCKER_HOST).
set -euo pipefail
cd "$(dirname "$0")/.."

PUBLIC_BUILDER=rust:1.89-bookworm
PUBLIC_RUNTIME=gcr.io/distroless/cc-debian12
PUBLIC_PYTHON=python:3.11-slim-bookworm
LOCAL_BUILDER=localhost/interceptor-base/rust:bookworm
LOCAL_RUNTIME=localhost/interceptor-base/cc-debian12:latest
LOCAL_PYTHON=localhost/interceptor-base/python:bookworm

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/interceptor"
WORK="$CACHE/base-images"
DOCKER=$(scripts/docker.sh client)

BUILDER_PACKAGES=(build-essential pkg-config libpcap-dev libsasl2-dev libssl-dev zlib1g-dev ca-certificates)
RUNTIME_PACKAGES=(libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 tzdata netbase)
PYTHON_PACKAGES=(python3-minimal libpython3.11-stdlib ca-certificates)

die() { echo "base-images.sh: $*" >&2; exit 1; }
log() { echo "base-images.sh: $*" >&2; }

present() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
# A public image is usable when it is here or a registry gives it (a closed network fails in milliseconds).
available() { present "$1" || timeout 120 "$DOCKER" pull -q "$1" >/dev/null 2>&1; }

# Run a command inside ROOT with /proc and /dev, in a mount namespace of its own (nothing leaks out).
in_root() {
  local root=$1
  shift
  unshare --mount --fork sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" && exec chroot "$root" "$@"
  ' sh "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"
}

# A Debian 12 minbase with the security updates, made once and kept as a tarball for every stand-in.
minbase() {
  local tarball="$WORK/bookworm-minbase.tar" root="$WORK/minbase"
  [ -f "$tarball" ] && return 0
  scripts/install-deps.sh debootstrap
  rm -rf "$root"
  log "debootstrap bookworm (minbase) from $MIRROR"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; die "debootstrap failed; log: $root.log"; }
  cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  in_root "$root" sh -c 'apt-get update -qq && apt-get -y -qq upgrade && apt-get clean' >>"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; die "updating the minbase failed; log: $root.log"; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
  : >"$root/etc/resolv.conf"
  tar -C "$root" --numeric-owner -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
  rm -rf "$root" "$root.log"
}

# The minbase in ROOT plus PACKAGES (Debian's current versions, no recommends), apt's lists removed.
bootstrap() {
  local root=$1
  shift
  [ -n "$root" ] && [ "$root" != / ] || die "bootstrap needs a directory"
  minbase
  rm -rf "$root" && mkdir -p "$root"
  tar -C "$root" -xf "$WORK/bookworm-minbase.tar"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  log "installing $* into $root"
  in_root "$root" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* && apt-get clean" \
    >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; die "installing $* failed; log: $root.log"; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root.log"
  : >"$root/etc/resolv.conf"
}

# docker import of a directory, with Dockerfile instructions (ENV, USER, CMD, ...) as --change.
import_dir() {
  local root=$1 tag=$2
  shift 2
  local changes=() c
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$root" --numeric-owner -c . | "$DOCKER" import "${changes[@]}" - "$tag" >/dev/null
  log "made $tag ($("$DOCKER" image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec))"
}

make_builder() {
  local root="$WORK/builder" sysroot
  bootstrap "$root" "${BUILDER_PACKAGES[@]}"
  # The machine's own extra certificate authorities (a TLS-inspecting proxy's, say), so that cargo reaches
  # crates.io from inside the build as it does from the machine.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    in_root "$root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in $root"
  fi
  # The machine's own toolchain (no other can be fetched here), laid out as the rust images lay it out:
  # CARGO_HOME=/usr/local/cargo with the commands on PATH. Documentation and the extra tools stay out.
  sysroot=$(rustc --print sysroot) || die "no Rust toolchain on this machine"
  mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
  cp -a "$sysroot/bin" "$sysroot/lib" "$root/usr/local/rust/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$root/usr/local/rust/"
  for tool in cargo rustc rustdoc; do ln -s "../../rust/bin/$tool" "$root/usr/local/cargo/bin/$tool"; done
  import_dir "$root" "$LOCAL_BUILDER" \
    "ENV CARGO_HOME=/usr/local/cargo" \
    "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "CMD [\"bash\"]"
  rm -rf "$root"
}

# distroless/cc's content, unpacked from the packages (no maintainer scripts run: nothing to run them).
make_runtime() {
  local root="$WORK/runtime" debs="$WORK/runtime-debs" helper="$WORK/runtime-helper" deb
  bootstrap "$helper" ca-certificates
  rm -rf "$root" "$debs" && mkdir -p "$root" "$debs"
  cp /etc/resolv.conf "$helper/etc/resolv.conf"
  in_root "$helper" sh -c "apt-get update -qq && mkdir -p /debs && cd /debs && apt-get download -qq ${RUNTIME_PACKAGES[*]}" \
    >>"$helper.log" 2>&1 || { tail -20 "$helper.log" >&2; die "downloading the runtime packages failed"; }
  mv "$helper"/debs/*.deb "$debs/"
  # Debian 12 keeps /bin, /lib, /lib64 and /sbin as links into /usr (merged /usr), as distroless does.
  mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{etc,tmp,var,root} "$root/home/nonroot" "$root/etc/ssl/certs"
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
  for deb in "$debs"/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
  done
  cp "$helper/etc/ssl/certs/ca-certificates.crt" "$root/etc/ssl/certs/"
  chmod 1777 "$root/tmp"
  chmod 700 "$root/root"
  chown 65532:65532 "$root/home/nonroot"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  cp "$helper/etc/os-release" "$root/etc/os-release" 2>/dev/null || cp "$helper/usr/lib/os-release" "$root/etc/os-release"
  # Documentation, manuals and the packages' own executables (locale and zone tools) go: distroless has
  # no programs but the dynamic linker.
  rm -rf "$root"/usr/share/{doc,man,info,lintian} "$root"/usr/bin/* "$root"/usr/sbin/*
  import_dir "$root" "$LOCAL_RUNTIME" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root" "$helper" "$debs"
}

make_python() {
  local root="$WORK/python"
  bootstrap "$root" "${PYTHON_PACKAGES[@]}"
  rm -rf "$root"/usr/share/{doc,man,info}
  import_dir "$root" "$LOCAL_PYTHON" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "CMD [\"python3\"]"
  rm -rf "$root"
}

ensure() {
  local what=$1 public=$2 local_tag=$3 maker=$4
  if available "$public"; then return 0; fi
  if ! present "$local_tag"; then
    [ "$(id -u)" -eq 0 ] || die "$public cannot be pulled and making its stand-in needs root"
    log "$public cannot be pulled: making the stand-in $local_tag"
    mkdir -p "$WORK"
    "$maker"
  fi
  echo "--build-arg=$what=$local_tag"
}

case "${1:-}" in
  args)
    ensure BUILDER_IMAGE "$PUBLIC_BUILDER" "$LOCAL_BUILDER" make_builder
    ensure RUNTIME_IMAGE "$PUBLIC_RUNTIME" "$LOCAL_RUNTIME" make_runtime
    ensure PYTHON_IMAGE "$PUBLIC_PYTHON" "$LOCAL_PYTHON" make_python
    ;;
  make)
    mkdir -p "$WORK"
    make_builder
    make_runtime
    make_python
    ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
