# Shared by scripts/run and scripts/test (sourced, not run): the Debian packages
# each purpose needs, their installation, the virtualenv, and the local libvirtd.
# Works as root and as a user with sudo, on a fresh Debian 12 with no systemd.

# -- Debian packages, one list per purpose (add a package to the list of what needs it) --
# Python and its virtual environments.
PYTHON_PACKAGES=(python3 python3-venv python3-pip)
# What pip builds libvirt-python (the kvm driver's binding) against.
KVM_BUILD_PACKAGES=(gcc python3-dev pkg-config libvirt-dev)
# The kvm driver's hypervisor: libvirt's daemon and QEMU.
# genisoimage makes the context CD-ROM of VMs with a CONTEXT.
KVM_RUN_PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 genisoimage)
# As root, scripts/run starts the system libvirtd, which runs QEMU as libvirt-qemu: the
# user, group and directories that package makes.
if [ "$(id -u)" = 0 ]; then KVM_RUN_PACKAGES+=(libvirt-daemon-system); fi
# `cloudburst guest build`: a busybox initramfs around a Debian kernel.
GUEST_PACKAGES=(busybox-static cpio)
# The PostgreSQL server the store tests start; Debian's chromium, which the
# dashboard's browser tests drive headless (Playwright cannot download browsers here).
TEST_PACKAGES=(postgresql chromium)

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# install_packages PACKAGE...: apt-get install those not installed yet (no recommends).
install_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# ensure_venv EXTRAS: ./.venv with cloudburst installed (editable) with those extras, src/ compiled;
# pip runs again only when pyproject.toml or the extras change.
ensure_venv() {
  local extras=$1 stamp
  stamp="$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -d' ' -f1)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  if [ "$(cat .venv/.cloudburst-installed 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$extras]"
    echo "$stamp" > .venv/.cloudburst-installed
  fi
  # The editable install runs from src/: compile it once, or every daemon, driver and
  # CLI start compiles ~200 modules again where PYTHONDONTWRITEBYTECODE is set (~0.5 s).
  .venv/bin/python -m compileall -q src
}

# ensure_libvirtd: start `libvirtd -d` when none answers (no systemd to start it):
# the system daemon as root, the user's session daemon otherwise. The kvm driver's
# host `localhost` uses the same one (qemu:///system as root, qemu:///session else).
ensure_libvirtd() {
  local socket
  command -v /usr/sbin/libvirtd >/dev/null || return 0
  if [ "$(id -u)" = 0 ]; then
    socket=/run/libvirt/libvirt-sock
  else
    socket="${XDG_RUNTIME_DIR:-$HOME/.cache}/libvirt/libvirt-sock"
  fi
  python3 - "$socket" <<'PY' && return 0
import socket, sys
with socket.socket(socket.AF_UNIX) as probe:
    try:
        probe.connect(sys.argv[1])
    except OSError:
        sys.exit(1)
PY
  echo "starting libvirtd -d (for the kvm driver)" >&2
  if [ "$(id -u)" = 0 ]; then
    # Directories Debian's libvirt-daemon-system would have made.
    mkdir -p /var/log/libvirt /var/lib/libvirt /run/libvirt
    /usr/sbin/virtlogd -d || true
  fi
  # The daemon starts either way: a kvm host then shows why (onehost list -l NAME,STAT,REASON).
  /usr/sbin/libvirtd -d || echo "libvirtd did not start; kvm hosts will be in error" >&2
}
