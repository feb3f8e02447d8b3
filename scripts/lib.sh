# shellcheck shell=bash
# Shared helpers for basphere's scripts. Source it:
#   . "$(dirname "$0")/lib.sh"
# Everything here works under `set -euo pipefail`.

# Packages every script needs on a fresh Debian 12 host. Kept in one place so
# scripts/test, scripts/run, scripts/bench and scripts/build-test-image agree.
BSP_PACKAGES=(
    # libvirt: the daemon, the QEMU driver, virsh, and headers for the virt crate
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
    # the hypervisor and qemu-img (versions must match; see bsp_install_packages)
    qemu-system-x86 qemu-utils
    # libvirt NAT networks need dnsmasq (DHCP/DNS) and iptables (masquerade rules)
    dnsmasq-base iptables iproute2
    # cloud-init NoCloud seeds are ISO 9660 images
    genisoimage
    # building the test image without loop devices or mounts
    debootstrap e2fsprogs fdisk
    # unshare/nsenter/flock, pgrep/pkill-by-pid helpers
    util-linux procps
    # ssh into guests (client) and the bastion's own sshd
    openssh-client openssh-server
    # non-root administrators reach the service account's database through sudo
    sudo
    # virt-install, used by the bench baseline
    virtinst
    # linker for cargo; OpenSSL headers for lettre's native TLS to SMTP; SQLite's
    # (Debian's library, not a bundled copy, which lintian rejects)
    gcc libc6-dev libssl-dev libsqlite3-dev
    ca-certificates
    # signup tests: a real SMTP server, and headless Chromium driven over WebDriver
    python3-aiosmtpd python3-paramiko chromium chromium-driver fonts-liberation
    # systemd-analyze verifies the units in templates/systemd (no systemd running needed)
    systemd
    # package tests: dpkg-shlibdeps (cargo-deb's $auto depends) and lintian
    dpkg-dev lintian
)

bsp_log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
bsp_die() { printf '[%s] ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }

bsp_require_root() {
    [[ $(id -u) -eq 0 ]] || bsp_die "must run as root (libvirt system daemon, namespaces, debootstrap)"
}

# True when the package is installed and configured ("ii").
bsp_pkg_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == "ii "* ]]
}

bsp_pkg_version() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true
}

# bsp_install_packages [EXTRA_PACKAGE...]
# Installs BSP_PACKAGES plus the extras. Skips apt entirely when everything is
# already present so repeated runs are fast and work offline.
#
# qemu-utils pin: some images ship a backported qemu-utils (10.x) that conflicts
# with bookworm's qemu-system-x86 7.2 (qemu-system-common/qemu-block-extra
# version lock). We install qemu-utils at exactly qemu-system-x86's version.
bsp_install_packages() {
    local pkgs=("${BSP_PACKAGES[@]}" "$@") missing=() p
    for p in "${pkgs[@]}"; do
        bsp_pkg_installed "$p" || missing+=("$p")
    done
    local qsys qutil
    qsys=$(bsp_pkg_version qemu-system-x86)
    qutil=$(bsp_pkg_version qemu-utils)
    if [[ ${#missing[@]} -eq 0 && -n $qsys && $qsys == "$qutil" ]]; then
        return 0
    fi
    bsp_log "installing packages: ${missing[*]:-(qemu-utils version fix)}"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # A fresh machine may have never fetched package lists.
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        apt-get -q update </dev/null
    fi
    local v
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    if [[ -z $v || $v == "(none)" ]]; then
        apt-get -q update </dev/null
        v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    fi
    [[ -n $v && $v != "(none)" ]] || bsp_die "qemu-system-x86 has no installation candidate; check apt sources"
    local list=()
    for p in "${pkgs[@]}"; do
        case $p in
            qemu-system-x86 | qemu-utils) ;;
            *) list+=("$p") ;;
        esac
    done
    # --no-install-recommends keeps a fresh host lean; everything needed is listed.
    "${apt[@]}" --no-install-recommends --allow-downgrades install \
        "${list[@]}" "qemu-system-x86=$v" "qemu-utils=$v" </dev/null
}

# The Debian mirror apt already uses (deb822 .sources or one-line .list), so
# debootstrap goes through the same (possibly proxied/local) mirror as apt.
# bsp_debian_mirror [debian|debian-security]
bsp_debian_mirror() {
    local want=${1:-debian} uri
    uri=$(
        {
            # deb822: "URIs: http://deb.debian.org/debian"
            awk '/^URIs:/{for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
            # one-line: "deb [opts] http://deb.debian.org/debian bookworm main"
            sed -E -n 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
        } | grep -E "/${want}/?\$" | head -n1
    ) || true
    if [[ -z $uri ]]; then
        case $want in
            debian-security) uri=http://deb.debian.org/debian-security ;;
            *) uri=http://deb.debian.org/debian ;;
        esac
    fi
    printf '%s\n' "${uri%/}"
}

# ---------------------------------------------------------------------------
# A private libvirtd in its own network and mount namespaces.
#
# Why: tests create real NAT networks, bridges, iptables rules and dnsmasq
# instances. Inside a fresh network namespace none of that can clash with (or
# be seen by) the host, a host libvirtd, or another test run; guests there can
# never send traffic to private-range addresses in the host namespace.
# The mount namespace lets libvirtd see its own /etc/libvirt, /run/libvirt,
# /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, all bound to
# directories under STATE_DIR. The socket directory is a plain directory on
# the host filesystem, and filesystem unix sockets work across network
# namespaces, so host-side clients connect with
#   qemu+unix:///system?socket=STATE_DIR/run/libvirt-sock
# Guests are reached with `ip netns exec NAME ssh ...`.
# ---------------------------------------------------------------------------

bsp_netns_libvirt_uri() {
    printf 'qemu+unix:///system?socket=%s/run/libvirt-sock\n' "$1"
}

# libvirtd refuses to start its QEMU driver when the compiled-in default user
# (libvirt-qemu) does not exist, even with user = "root" in qemu.conf. Debian
# creates it in libvirt-daemon-system's postinst; we do not need that package
# for a private daemon, so create the same accounts (same ids) when missing.
bsp_ensure_libvirt_accounts() {
    local id=64055
    getent group libvirt >/dev/null || groupadd --system libvirt
    getent group kvm >/dev/null || groupadd --system kvm
    if ! getent group libvirt-qemu >/dev/null; then
        if getent group "$id" >/dev/null; then groupadd --system libvirt-qemu; else groupadd --system --gid "$id" libvirt-qemu; fi
    fi
    if ! getent passwd libvirt-qemu >/dev/null; then
        local uidopt=()
        getent passwd "$id" >/dev/null || uidopt=(--uid "$id")
        useradd --system "${uidopt[@]}" --gid kvm --groups libvirt-qemu --home-dir /var/lib/libvirt \
            --no-create-home --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu
    fi
}

# bsp_netns_libvirt_start NAME STATE_DIR [MODE]  -> prints the URI on stdout
# MODE root (the default): QEMU runs as root and libvirt never changes a file's
# owner, so every disk a test hands it is readable.
# MODE debian: access as Debian's packages set it up: QEMU runs as libvirt-qemu,
# libvirt gives each disk to that account while its VM runs (dynamic_ownership)
# and hands it back after (remember_owner), and virtlogd writes QEMU's logs.
# Tests that check who may read what need this one.
bsp_netns_libvirt_start() {
    local name=$1 state=$2 mode=${3:-root}
    [[ $name =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || bsp_die "bad netns name: $name"
    [[ $mode == root || $mode == debian ]] || bsp_die "bad libvirtd mode: $mode (root or debian)"
    mkdir -p "$state"
    state=$(cd "$state" && pwd -P)
    # We wipe and bind-mount subdirectories of STATE_DIR: only ever do that
    # to an empty directory or one we made before (marker file).
    if [[ ! -e $state/.bsp-netns-libvirt ]]; then
        [[ -z $(ls -A "$state") ]] || bsp_die "STATE_DIR $state is not empty and was not made by bsp_netns_libvirt_start"
        : >"$state/.bsp-netns-libvirt"
    fi
    local uri sock
    uri=$(bsp_netns_libvirt_uri "$state")
    sock=$state/run/libvirt-sock
    # sun_path is 108 bytes including the NUL.
    ((${#sock} < 108)) || bsp_die "socket path too long for a unix socket: $sock (use a shorter STATE_DIR)"

    # NAT networks fail at net-start without these; say so up front.
    command -v iptables >/dev/null || bsp_die "iptables is not installed (libvirt NAT networks need it)"
    [[ -x /usr/sbin/dnsmasq ]] || bsp_die "dnsmasq is not installed (package dnsmasq-base; libvirt NAT networks need it)"
    [[ -x /usr/sbin/libvirtd ]] || bsp_die "libvirtd is not installed (package libvirt-daemon)"
    command -v virsh >/dev/null || bsp_die "virsh is not installed (package libvirt-clients)"
    if [[ $mode == debian ]]; then
        [[ -x /usr/sbin/virtlogd ]] || bsp_die "virtlogd is not installed (package libvirt-daemon)"
    fi

    bsp_ensure_libvirt_accounts

    if ip netns list | awk '{print $1}' | grep -qxF "$name"; then
        bsp_die "network namespace $name already exists (stale run? bsp_netns_libvirt_stop $name $state)"
    fi

    # Start from a clean slate: domains/networks defined by an earlier run
    # with the same STATE_DIR must not come back (cache/ only holds QEMU
    # capability probes, which are safe to reuse and speed up start).
    rm -rf --one-file-system "${state:?}"/{run,lib,log,etc}
    # The directory layout the Debian packages ship: libvirtd does not create
    # some of these itself (e.g. without log/qemu every domain with a
    # <serial><log file='/var/log/libvirt/qemu/...'/> fails to start).
    mkdir -p "$state"/{run,cache/qemu,log/qemu,log/lxc} \
        "$state"/lib/{boot,images,qemu/channel/target} \
        "$state"/etc/{qemu/networks/autostart,nwfilter,storage}
    # Minimal daemon config, written fresh: the host's /etc/libvirt (domains,
    # networks, autostart links) must not leak in.
    cat >"$state/etc/libvirtd.conf" <<'CONF'
# private test libvirtd (basphere scripts/lib.sh)
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
CONF
    # Both modes:
    # security_driver none: no AppArmor/SELinux in a throwaway test daemon (the
    # DAC driver, which runs QEMU as its user and chowns disks, is always on).
    # cgroup_controllers [] and namespaces []: `ip netns exec` remounts /sys
    # (no cgroupfs inside), and a per-qemu /dev namespace gains nothing here.
    # Mode root only:
    # user/group root: qemu can read any disk the tests hand it.
    # stdio_handler file: qemu logs go straight to files, no virtlogd needed.
    # Mode debian leaves user, group, dynamic_ownership, remember_owner and
    # stdio_handler at libvirt's defaults, as Debian's qemu.conf does.
    {
        printf '# private test libvirtd (basphere scripts/lib.sh), mode %s\n' "$mode"
        if [[ $mode == root ]]; then
            cat <<'CONF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
CONF
        fi
        cat <<'CONF'
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
CONF
    } >"$state/etc/qemu.conf"
    : >"$state/etc/libvirt.conf"

    ip netns add "$name"
    ip -n "$name" link set lo up

    # Inside: a private mount namespace; bind our directories over libvirt's
    # paths (/var/run is a symlink to /run on Debian 12, so /run/libvirt covers
    # both), then exec libvirtd in the foreground so $! is libvirtd itself
    # (ip netns exec, unshare and bash all exec, none forks). In mode debian
    # virtlogd starts first, in the same namespaces: its socket is
    # /run/libvirt/virtlogd-sock, where libvirtd looks for it. It stays a child
    # of libvirtd's process and dies with the netns (bsp_netns_libvirt_stop).
    # shellcheck disable=SC2016 # expanded by the inner bash, not here
    local inner='
        set -eu
        s=$1 mode=$2
        for pair in run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt \
                    log:/var/log/libvirt etc:/etc/libvirt; do
            src=$s/${pair%%:*} dst=${pair#*:}
            mkdir -p "$dst"
            mount --bind "$src" "$dst"
        done
        if [ "$mode" = debian ]; then
            # /dev/kvm as the udev rules of Debian leave it, root:kvm 0660
            # (libvirt-qemu is in kvm), in this namespace alone. libvirt probes
            # QEMU with KVM when root may open it, and probes again on every
            # lookup (seconds each) when the account of QEMU may not; a host
            # without udev may leave it to another group.
            if [ -c /dev/kvm ]; then
                rm -f "$s/kvm"
                if mknod -m 0660 "$s/kvm" c "$((16#$(stat -c %t /dev/kvm)))" "$((16#$(stat -c %T /dev/kvm)))" &&
                    chgrp kvm "$s/kvm" && mount --bind "$s/kvm" /dev/kvm; then :; else
                    echo "note: cannot give /dev/kvm to group kvm; domain definitions will be slow" >&2
                fi
            fi
            /usr/sbin/virtlogd --pid-file "$s/virtlogd.pid" &
            i=0
            while [ ! -S /run/libvirt/virtlogd-sock ]; do
                i=$((i + 1))
                [ "$i" -le 100 ] || { echo "virtlogd did not start" >&2; exit 1; }
                sleep 0.1
            done
        fi
        exec /usr/sbin/libvirtd --pid-file "$s/libvirtd.pid"
    '
    setsid ip netns exec "$name" unshare --mount --propagation private \
        bash -c "$inner" bsp-libvirtd "$state" "$mode" \
        </dev/null >>"$state/libvirtd.log" 2>&1 &
    local pid=$!
    printf '%s\n' "$pid" >"$state/libvirtd.launcher.pid"
    printf '%s\n' "$name" >"$state/netns"

    # Bounded wait for the daemon to answer.
    local i
    for ((i = 0; i < 120; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            bsp_log "libvirtd exited during startup; its log ($state/libvirtd.log):"
            tail -n 50 "$state/libvirtd.log" >&2 || true
            bsp_netns_libvirt_stop "$name" "$state" || true
            bsp_die "private libvirtd failed to start in netns $name"
        fi
        if [[ -S $sock ]] && virsh -q -c "$uri" version >/dev/null 2>&1; then
            printf '%s\n' "$uri"
            return 0
        fi
        sleep 0.25
    done
    bsp_log "libvirtd did not answer on $sock within 30s; its log ($state/libvirtd.log):"
    tail -n 50 "$state/libvirtd.log" >&2 || true
    bsp_netns_libvirt_stop "$name" "$state" || true
    bsp_die "private libvirtd in netns $name did not come up"
}

# Live pids in netns NAME, plus the recorded libvirtd pid (in case the netns
# is already gone).
_bsp_netns_alive_pids() {
    local name=$1 state=$2 p
    {
        ip netns pids "$name" 2>/dev/null || true
        if [[ -f $state/libvirtd.launcher.pid ]]; then cat "$state/libvirtd.launcher.pid"; fi
    } | sort -u | while read -r p; do
        if kill -0 "$p" 2>/dev/null; then echo "$p"; fi
    done
}

# bsp_netns_libvirt_stop NAME STATE_DIR
# Kills libvirtd and every process in the netns (qemu, dnsmasq, stray ssh),
# deletes the netns (its bridges and iptables rules go with it). The bind
# mounts lived only in libvirtd's private mount namespace, which the kernel
# drops when its last process exits. Safe to call twice.
bsp_netns_libvirt_stop() {
    local name=$1 state=$2 pids i
    # Polite first: libvirtd shuts down cleanly on SIGTERM; qemu exits on it.
    pids=$(_bsp_netns_alive_pids "$name" "$state")
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086 # word-splitting the pid list is intended
        kill -TERM $pids 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            pids=$(_bsp_netns_alive_pids "$name" "$state")
            [[ -z $pids ]] && break
            sleep 0.25
        done
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            for ((i = 0; i < 40; i++)); do
                pids=$(_bsp_netns_alive_pids "$name" "$state")
                [[ -z $pids ]] && break
                sleep 0.25
            done
        fi
    fi
    [[ -z $pids ]] || bsp_log "warning: processes still alive in netns $name: $pids"
    if ip netns list | awk '{print $1}' | grep -qxF "$name"; then
        ip netns del "$name" || bsp_log "warning: could not delete netns $name"
    fi
    rm -f "$state/libvirtd.launcher.pid" "$state/run/libvirt-sock" "$state/run/libvirt-sock-ro"
}
