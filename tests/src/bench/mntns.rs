//! `lxvirt-bench mntns [RUNS [IDLE]]`: what giving a process a container
//! root costs two ways, RUNS times each, with IDLE idle processes on the
//! host (the tasks `pivot_root` visits; a container has two). The second
//! is what lxvirt's mounter does (lxc/mount_template.rs); this measures
//! the two bare, without the rest of a start:
//!
//! - pivoting (lxvirt without a template): a copy of the host's mount
//!   namespace (`unshare`), the root bound, `pivot_root`, the old root
//!   detached;
//! - a template: a mount namespace made once whose root is an empty,
//!   read-only tmpfs; per container the root is cloned detached
//!   (`open_tree`), the template joined and copied (one mount), the root
//!   moved onto its `/` and `chroot`ed into. A path that reaches the
//!   tmpfs's root is turned back onto the mount above it, so an escape
//!   from the `chroot` lands on the container's root again (checked on the
//!   first run).
//!
//! Each run is a fork that does it and exits; the figure is fork to reap.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lxvirt_tests::{busybox_root, shared_tempdir};
use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")
}

/// Forks a child that runs `body` (raw system calls only: the child of a
/// fork) and exits with its code.
fn in_child(body: impl FnOnce() -> i32) -> Result<Pid> {
    // SAFETY: the bench runs on a current-thread runtime with no other
    // thread; the child makes system calls and exits without returning.
    match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            let code = body();
            // SAFETY: ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

fn reap(pid: Pid, what: &str) -> Result<()> {
    match waitpid(pid, None)? {
        WaitStatus::Exited(_, 0) => Ok(()),
        other => bail!("{what}: {other:?}"),
    }
}

/// A copy of the mount namespace, its mounts no longer shared with the
/// host's.
fn own_private_namespace() -> bool {
    // SAFETY: plain system calls; the mount's strings are static.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
    }
}

/// The template: a process holding a mount namespace whose only mount is
/// an empty, read-only tmpfs at its root. Returns it and its namespace.
fn template(dir: &Path) -> Result<(Pid, std::fs::File)> {
    let top = dir.join("template");
    std::fs::create_dir_all(&top)?;
    let top_c = cstring(&top)?;
    let (ready_r, ready_w) = nix::unistd::pipe()?;
    let holder = in_child(|| {
        // SAFETY: plain system calls on NUL-terminated strings that live
        // until the child exits.
        unsafe {
            let ok = own_private_namespace()
                && libc::mount(
                    c"template".as_ptr(),
                    top_c.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    c"size=4k,mode=0555".as_ptr().cast(),
                ) == 0
                && libc::chdir(top_c.as_ptr()) == 0
                && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
                && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0
                && libc::chdir(c"/".as_ptr()) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT
                        | libc::MS_BIND
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) == 0;
            if !ok {
                return 1;
            }
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&ready_w),
                c"x".as_ptr().cast(),
                1,
            );
            libc::pause();
            0
        }
    })?;
    drop(ready_w);
    let mut byte = [0u8; 1];
    let got = nix::unistd::read(&ready_r, &mut byte)?;
    if got != 1 {
        let _ = waitpid(holder, None);
        bail!("the template namespace could not be made");
    }
    let ns = std::fs::File::open(format!("/proc/{holder}/ns/mnt"))?;
    Ok((holder, ns))
}

/// Pivoting, in the calling (child) process.
fn classic(rootfs: &CString) -> i32 {
    // SAFETY: plain system calls on NUL-terminated strings.
    unsafe {
        let ok = own_private_namespace()
            && libc::mount(
                rootfs.as_ptr(),
                rootfs.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) == 0
            && libc::chdir(rootfs.as_ptr()) == 0
            && libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0
            && libc::umount2(c".".as_ptr(), libc::MNT_DETACH) == 0
            && libc::chdir(c"/".as_ptr()) == 0;
        if ok { 0 } else { 2 }
    }
}

/// The template's way, in the calling (child) process.
fn from_template(rootfs: &CString, template: i32) -> i32 {
    // SAFETY: plain system calls on NUL-terminated strings and
    // descriptors this process owns.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            rootfs.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
        ) as i32;
        let ok = tree >= 0
            && libc::setns(template, libc::CLONE_NEWNS) == 0
            && libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                c"/".as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            ) == 0
            // `/` is still the tmpfs below; the tree's own descriptor
            // is its root.
            && libc::fchdir(tree) == 0
            && libc::chroot(c".".as_ptr()) == 0
            && libc::chdir(c"/".as_ptr()) == 0;
        if ok { 0 } else { 3 }
    }
}

/// Whether the busybox root is what the process sees at `/`.
fn sees_the_root() -> bool {
    // SAFETY: `access` on a NUL-terminated string.
    unsafe { libc::access(c"/bin/busybox".as_ptr(), libc::F_OK) == 0 }
}

/// The classic escape: a `chroot` below the current directory, then
/// climbing out of it and making that the root.
fn escape() {
    // SAFETY: plain system calls on NUL-terminated strings.
    unsafe {
        let here = libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if libc::chroot(c"/bin".as_ptr()) == 0 && libc::fchdir(here) == 0 {
            for _ in 0..64 {
                libc::chdir(c"..".as_ptr());
            }
            libc::chroot(c".".as_ptr());
        }
    }
}

pub fn bench(runs: usize, idle: usize) -> Result<()> {
    let dir = shared_tempdir()?;
    let rootfs_path = dir.path().join("rootfs");
    busybox_root(&rootfs_path);
    let rootfs = cstring(&rootfs_path)?;
    let mut idlers = Vec::with_capacity(idle);
    for _ in 0..idle {
        // SAFETY: `pause` returns only on a signal; the parent kills it.
        idlers.push(in_child(|| unsafe {
            libc::pause();
            0
        })?);
    }
    let (holder, ns) = template(dir.path())?;
    let template_fd = std::os::fd::AsRawFd::as_raw_fd(&ns);

    // The escape check first: it must land on the container's root.
    let check = in_child(|| {
        if from_template(&rootfs, template_fd) != 0 || !sees_the_root() {
            return 4;
        }
        escape();
        if sees_the_root() { 0 } else { 5 }
    })?;
    reap(
        check,
        "an escape from the template's chroot reached something else",
    )?;

    println!("mntns: {runs} runs each, {idle} idle processes beside");
    println!();
    println!("| a container's root | per run (fork, root, exit) |");
    println!("| --- | --- |");
    for (name, template) in [
        (
            "pivoting: unshare, bind, pivot_root, detach the old root",
            false,
        ),
        (
            "a template: open_tree, setns, unshare, move_mount, chroot",
            true,
        ),
    ] {
        let begin = Instant::now();
        for _ in 0..runs {
            let child = in_child(|| {
                let code = if template {
                    from_template(&rootfs, template_fd)
                } else {
                    classic(&rootfs)
                };
                if code == 0 && !sees_the_root() {
                    6
                } else {
                    code
                }
            })?;
            reap(child, name)?;
        }
        let each = begin.elapsed().as_secs_f64() * 1000.0 / runs.max(1) as f64;
        println!("| {name} | {each:.3} ms |");
    }

    let _ = kill(holder, Signal::SIGKILL);
    let _ = waitpid(holder, None);
    for pid in idlers {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    Ok(())
}
