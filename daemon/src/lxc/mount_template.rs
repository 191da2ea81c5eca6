//! The template mount namespace every container's root is stacked on.
//!
//! `pivot_root(2)` visits every task on the host to move the ones whose
//! root is the old one: with thousands of containers running that is
//! milliseconds of each start and a large share of a host's starting
//! CPU. Instead lxvirtd makes one mount namespace at start whose only
//! mount is an empty, read-only tmpfs at its root; the mounter joins it,
//! copies it (one mount, not the host's table), moves the container's
//! tree onto its `/` and `chroot`s into the tree (`Setup::switch_root`).
//!
//! The tmpfs is never seen: a path that climbs to it is turned onto the
//! tree stacked on it, `/proc/self/mountinfo` inside lists only what is
//! below the root, and the kernel counts the tree as the namespace's root
//! (a nested user namespace may be made). Linux 7.0's
//! `OPEN_TREE_NAMESPACE` does the same in one call.
//!
//! The namespace lives as long as a descriptor of it: the monitor
//! spawner's table holds one and each monitor inherits it
//! (`--mount-template=FD`).

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::sys::{CloneFlags, Errno, Linux, MntFlags, MsFlags, Syscalls};

/// Why the template could not be made: the step and its errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot make the template mount namespace: {step} failed: {}", errno.desc())]
pub struct TemplateError {
    pub step: &'static str,
    pub errno: Errno,
}

/// The flags of the template's tmpfs: nothing can be executed, opened as
/// a device or gain privileges through it (it holds nothing anyway).
const LOCKED_DOWN: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Makes the template on a thread of its own (the thread joins the new
/// namespace and ends) and returns a descriptor of it. `scratch` is any
/// existing directory: the tmpfs is mounted there in the new namespace
/// only, before it becomes the root.
pub fn make(scratch: &Path) -> Result<OwnedFd, TemplateError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| make_on_this_thread(&Linux, scratch))
            .join()
            .unwrap_or(Err(TemplateError {
                step: "the template thread",
                errno: Errno::EIO,
            }))
    })
}

/// The template's making in the calling thread, which it leaves in the
/// template.
fn make_on_this_thread<S: Syscalls + ?Sized>(
    sys: &S,
    scratch: &Path,
) -> Result<OwnedFd, TemplateError> {
    let failed = |step| move |errno| TemplateError { step, errno };
    let root = Path::new("/");
    let dot = Path::new(".");
    // CLONE_FS: the thread's root and working directory become its own,
    // so that pivot_root moves no other thread of the daemon.
    sys.unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .map_err(failed("unshare"))?;
    let template = sys.hold_mount_namespace().map_err(failed("open"))?;
    sys.mount(
        None,
        root,
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(failed("making the mounts private"))?;
    sys.mount(
        Some(Path::new("lxvirt-template")),
        scratch,
        Some("tmpfs"),
        LOCKED_DOWN,
        Some("mode=0555,size=4k"),
    )
    .map_err(failed("mounting the tmpfs"))?;
    sys.chdir(scratch)
        .and_then(|()| sys.pivot_root(dot, dot))
        .and_then(|()| sys.umount2(dot, MntFlags::MNT_DETACH))
        .and_then(|()| sys.chdir(root))
        .map_err(failed("pivot_root"))?;
    sys.mount(
        None,
        root,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | LOCKED_DOWN,
        None,
    )
    .map_err(failed("making the tmpfs read-only"))?;
    Ok(template)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sys::recorder::Recorder;

    #[test]
    fn the_template_is_an_empty_read_only_tmpfs_in_a_namespace_of_its_own() {
        let sys = Recorder::new();
        make_on_this_thread(&sys, Path::new("/run/lxvirt")).unwrap();
        let calls = sys.calls();
        let at = |needle: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in {calls:#?}"))
        };
        assert_eq!(at("unshare CLONE_FS|CLONE_NEWNS"), 0);
        // The descriptor is of the new namespace, before its root moves.
        assert!(at("hold_mount_namespace") < at("pivot_root"));
        let tmpfs = &calls[at("mount lxvirt-template")];
        assert!(tmpfs.contains("/run/lxvirt") && tmpfs.contains("tmpfs"));
        assert!(tmpfs.contains("mode=0555"), "{tmpfs}");
        assert!(at("mount lxvirt-template") < at("chdir /run/lxvirt"));
        assert!(at("chdir /run/lxvirt") < at("pivot_root . ."));
        assert!(at("pivot_root . .") < at("umount2 ."));
        let readonly = calls.iter().rposition(|c| c.starts_with("mount")).unwrap();
        assert!(readonly > at("umount2 ."));
        assert!(calls[readonly].contains("MS_RDONLY"), "{}", calls[readonly]);
    }

    #[test]
    fn a_failing_step_is_named() {
        let sys = Recorder::new().fail("pivot_root", Errno::EINVAL);
        let error = make_on_this_thread(&sys, Path::new("/run/lxvirt")).unwrap_err();
        assert_eq!(
            error,
            TemplateError {
                step: "pivot_root",
                errno: Errno::EINVAL
            }
        );
        assert!(error.to_string().contains("pivot_root failed"), "{error}");
    }
}
