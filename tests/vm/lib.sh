# Shared settings of lxvirt's nested-VM harness (sourced, not run).
# Everything the harness writes goes to $LXVIRT_VM_WORK; the repository is
# only read (the guest sees it read-only through the shared host root).
VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$VM_DIR/../.." && pwd)
WORK=${LXVIRT_VM_WORK:-/var/tmp/lxvirt-vm}
KROOT=$WORK/kernel                   # the linux-image .deb, unpacked (not installed)
INITRD=$WORK/initrd.cpio.gz
# The QEMU driver tests' guest (tests/vm/mkguest): its initramfs, the
# uncompressed kernel it boots fastest from, and its base command line.
GUEST_INITRD=$WORK/guest-initrd.cpio.gz
GUEST_KERNEL=$WORK/guest-vmlinux
GUEST_CMDLINE=$WORK/guest.cmdline
QGA_ROOT=$WORK/qemu-guest-agent     # the qemu-guest-agent .deb, unpacked (not installed): the guest's qemu-ga
SEROOT=$WORK/selinux-root            # a copy of the stock policy store with lxvirt's modules linked in
POLICY_BIN=$SEROOT/etc/selinux/default/policy/policy.33
# Where lxvirtd, lxvirt and lxvirt-monitor are (the workspace's target/debug by default).
LXVIRT_BIN_DIR=${LXVIRT_BIN_DIR:-$REPO/target/debug}

# What the VM stage needs on the host (Debian 12 package names).
VM_PACKAGES=(
  qemu-system-x86        # qemu-system-x86_64 (TCG: the machine's /dev/kvm cannot run a stock kernel)
  qemu-utils             # qemu-img: transient disks' overlays, the real-qemu command-line tests' disk chains
  ovmf                   # UEFI flash firmware (OVMF_CODE_4M.fd) for the same tests
  busybox-static         # the initrd's only program, and the containers' root filesystems
  kmod                   # modprobe --show-depends, depmod for the unpacked kernel
  cpio                   # the initrd archive
  xz-utils               # the test guest's uncompressed kernel (mkguest --vmlinux)
  selinux-policy-default # Debian's refpolicy (MCS): the guest's base policy
  selinux-policy-dev     # /usr/share/selinux/devel/Makefile to build policy/
  selinux-utils          # load_policy, setenforce, getenforce, runcon (guest)
  policycoreutils        # semodule (host: link the module into a store copy), restorecon
  checkpolicy            # the module compiler
  semodule-utils         # semodule_package
  e2fsprogs              # chattr etc. for the guest's tools
  dbus-daemon            # the private bus in the guest
  systemd                # the VM_INIT=systemd guest's PID 1 (guest/stage2-systemd)
  dbus                   # its system bus (dbus.service)
  systemd-container      # its systemd-machined (machinectl, machine.slice)
  coreutils              # chcon, runcon
  dmsetup                # the dm suite's look at what is left in the kernel
  xfsprogs               # the dm suite's xfs volumes (mkfs.xfs, xfs_admin)
  # The test guest's qemu-ga (tests/vm/mkguest copies them from the host);
  # qemu-system-x86 needs them too.
  libglib2.0-0 libnuma1 liburing2 libudev1
)

kernel_version() { ls "$KROOT/lib/modules" 2>/dev/null | sort -V | tail -1; }

log() { printf '%s %s\n' "[vm $(date +%T)]" "$*" >&2; }

# The daemon crate's unit-test binary (the dm and net suites run it in the
# guest), built if needed; empty when cargo cannot say. Asked of the whole
# workspace, as `cargo test --workspace` built it: a single package's build
# unifies its dependencies' features differently and would build again.
dm_test_binary() {
  workspace_test_binary lib lxvirtd
}

# The networking integration-test binary (the net suite runs it), likewise.
net_test_binary() {
  integration_test_binary networking
}

# integration_test_binary NAME: the path of lxvirt-tests' test binary NAME.
integration_test_binary() {
  workspace_test_binary test "$1"
}

# workspace_test_binary KIND NAME: the test executable of the target NAME
# of kind KIND (lib, test) in the workspace.
workspace_test_binary() {
  (cd "$REPO" && cargo test --workspace --locked --no-run --message-format=json 2>/dev/null) \
    | grep -F "\"kind\":[\"$1\"]" | grep -F "\"name\":\"$2\"," \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1
}
