//! Whether this host can run virtual machines with KVM, and why not.
//!
//! `type='kvm'` needs a `/dev/kvm` that boots a stock guest kernel;
//! `type='qemu'` runs under TCG (software) wherever QEMU is installed.
//! The probe is cheap (a few `stat`s, one `open` and two ioctls) and runs
//! once at daemon start, for the capabilities and for refusing a start
//! with the reason.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::host::HostPaths;

/// `KVM_GET_API_VERSION`: `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// `KVM_CREATE_VM`: `_IO(KVMIO, 0x01)`.
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
/// The only API version Linux has had since 2.6.22.
const KVM_API_VERSION: libc::c_int = 12;

/// Why `type='kvm'` cannot run here; `None` when it can.
pub fn kvm_unavailable(paths: &HostPaths) -> Option<String> {
    let device = paths.dev.join("kvm");
    if !device.exists() {
        return Some(format!(
            "there is no {} (load kvm_intel or kvm_amd, and turn virtualization on in the firmware); type='qemu' runs without it",
            device.display()
        ));
    }
    // PVM (a paravirtualized KVM for guests of a cloud) exposes
    // /dev/kvm and creates VMs, but a stock guest kernel hangs in its
    // early boot: nothing short of booting one would show it.
    if paths.sys.join("module/kvm_pvm").exists() {
        return Some(
            "this host's /dev/kvm is PVM (module kvm_pvm), which cannot boot a stock guest kernel; use type='qemu' (TCG)"
                .to_owned(),
        );
    }
    probe_device(&device).err()
}

/// Opens `device`, checks its API version and creates (and drops) a VM.
fn probe_device(device: &Path) -> Result<(), String> {
    let kvm = File::options()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("cannot open {}: {e}", device.display()))?;
    // SAFETY: the descriptor is kvm's, open across the call; the ioctl
    // takes no argument and touches no memory of ours.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != KVM_API_VERSION {
        return Err(format!(
            "{} speaks KVM API version {version}, not {KVM_API_VERSION}",
            device.display()
        ));
    }
    // SAFETY: as above; the argument is the machine type (0: default).
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "{} cannot create a virtual machine: {}",
            device.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: KVM_CREATE_VM returned a new descriptor that nothing else
    // owns; it is closed when this goes out of scope.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, HostPaths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            dev: dir.path().join("dev"),
        };
        for path in [&paths.proc, &paths.sys, &paths.dev] {
            std::fs::create_dir_all(path).unwrap();
        }
        (dir, paths)
    }

    #[test]
    fn no_device_says_which_modules_and_the_fallback() {
        let (_dir, paths) = tree();
        let reason = kvm_unavailable(&paths).unwrap();
        assert!(
            reason.contains("kvm_intel") && reason.contains("type='qemu'"),
            "{reason}"
        );
    }

    #[test]
    fn pvm_is_refused_by_name() {
        let (_dir, paths) = tree();
        std::fs::write(paths.dev.join("kvm"), "").unwrap();
        std::fs::create_dir_all(paths.sys.join("module/kvm_pvm")).unwrap();
        let reason = kvm_unavailable(&paths).unwrap();
        assert!(reason.contains("PVM") && reason.contains("TCG"), "{reason}");
    }

    #[test]
    fn a_device_that_is_not_kvm_fails_its_ioctl() {
        let (_dir, paths) = tree();
        // A regular file where /dev/kvm should be: the ioctl is refused.
        std::fs::write(paths.dev.join("kvm"), "").unwrap();
        let reason = kvm_unavailable(&paths).unwrap();
        assert!(reason.contains("API version -1"), "{reason}");
    }

    /// This host as it is: whatever it says must be consistent with what
    /// the kernel shows.
    #[test]
    fn the_real_host_is_judged_by_its_own_device() {
        let paths = HostPaths::default();
        let verdict = kvm_unavailable(&paths);
        if !Path::new("/dev/kvm").exists() {
            assert!(verdict.is_some());
        } else if Path::new("/sys/module/kvm_pvm").exists() {
            assert!(verdict.as_deref().is_some_and(|v| v.contains("PVM")));
        }
        println!("KVM here: {verdict:?}");
    }
}

/// The machine types `emulator` offers (`-machine help`), aliases
/// included.
pub fn machine_types(emulator: &Path) -> std::io::Result<Vec<String>> {
    let output = std::process::Command::new(emulator)
        .args(["-machine", "help"])
        .stdin(std::process::Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "{} -machine help: {}",
            emulator.display(),
            output.status
        )));
    }
    Ok(parse_machine_help(&String::from_utf8_lossy(&output.stdout)))
}

/// The first word of each line after the heading.
fn parse_machine_help(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("Supported machines"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod machine_tests {
    use super::parse_machine_help;

    #[test]
    fn machine_help_lists_types_and_aliases() {
        let text = "Supported machines are:\n\
                    microvm              microvm (i386)\n\
                    pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n\
                    q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n\
                    none                 empty machine\n";
        assert_eq!(parse_machine_help(text), ["microvm", "pc", "q35", "none"]);
    }
}
