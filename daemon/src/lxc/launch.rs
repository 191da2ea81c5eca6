//! Launching a container's init: one fork-like clone with every namespace
//! flag, the monitor's part (id maps, cgroup placement, release) and the
//! child's part ([`setup`](crate::lxc::setup)), with the child's failure
//! carried back over a close-on-exec pipe.
//!
//! ```text
//! monitor                               child
//! clone3(NEWNS|NEWPID|...|PIDFD)  ──►   wait on the sync pipe
//! write uid_map / gid_map
//! place_in_cgroup(pid)
//! release (sync pipe)             ──►   setup: mounts, /proc, /sys, /dev,
//!                                       pivot_root, hostname, console, ids,
//!                                       capabilities, label, execve(init)
//! read the error pipe: EOF = exec'd ◄── (or a JSON SetupError, _exit(127))
//! ```
//!
//! [`launch`] must run in a single-threaded process (the monitor): the
//! child is a copy of the calling thread only and allocates.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use thiserror::Error;

use crate::lxc::setup::{self, Setup, SetupError, Step};
use crate::lxc::spec::{ContainerSpec, IdMapping, NsChoice, SPEC_VERSION};
use crate::sys::linux::{self, Forked};
use crate::sys::{CloneFlags, Errno, Linux, Syscalls};

/// What [`launch`] needs besides the spec.
pub struct LaunchContext<'a> {
    pub spec: &'a ContainerSpec,
    /// Host paths of the pty slaves created by the monitor, one per console
    /// (console 0 first); already chowned to the container's mapped root
    /// when there is a user namespace.
    pub console_slaves: &'a [PathBuf],
    /// Called in the monitor (the parent) with the child's host pid after
    /// clone and before the child is released to set itself up: the
    /// monitor puts it into the container's cgroups there.
    pub place_in_cgroup: &'a mut dyn FnMut(Pid) -> Result<(), String>,
}

impl std::fmt::Debug for LaunchContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchContext")
            .field("spec", &self.spec.name)
            .field("console_slaves", &self.console_slaves)
            .finish_non_exhaustive()
    }
}

/// A running init: its host pid (a child of the caller, to be reaped by
/// it) and a pidfd for it.
#[derive(Debug)]
pub struct Launched {
    pub pid: Pid,
    pub pidfd: OwnedFd,
}

/// Why a container's init could not be started.
#[derive(Debug, Error)]
pub enum LaunchError {
    #[error(
        "container '{domain}': launch spec version {found} is not supported (expected {SPEC_VERSION}); restart the monitor with a matching lxvirtd"
    )]
    SpecVersion { domain: String, found: u32 },
    #[error("container '{domain}': cannot create the staging directory {path}")]
    Staging {
        domain: String,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("container '{domain}': cannot create the launch pipes")]
    Pipe {
        domain: String,
        #[source]
        source: Errno,
    },
    #[error("container '{domain}': cannot join the shared namespace {path}; check <lxc:namespace>")]
    JoinNamespace {
        domain: String,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("container '{domain}': cannot return the monitor to its own {kind} namespace")]
    RestoreNamespace {
        domain: String,
        kind: &'static str,
        #[source]
        source: Errno,
    },
    #[error("container '{domain}': cannot clone the container's init")]
    Clone {
        domain: String,
        #[source]
        source: Errno,
    },
    #[error("container '{domain}': cannot write {path}; check <idmap>")]
    IdMap {
        domain: String,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("container '{domain}': cannot place init in its cgroups: {message}")]
    Cgroup { domain: String, message: String },
    #[error("container '{domain}': cannot read the setup report of init")]
    Report {
        domain: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container '{domain}': init's setup sent an unreadable report: {report:?}")]
    BadReport { domain: String, report: String },
    #[error("container '{domain}': {error}")]
    Setup { domain: String, error: SetupError },
}

impl LaunchError {
    /// The child's own failure, when the setup inside the container failed.
    pub fn setup_error(&self) -> Option<&SetupError> {
        match self {
            LaunchError::Setup { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The clone flags for a spec: new mount and PID namespaces always, UTS,
/// IPC and network when they are new, a user namespace with an id map.
/// Shared namespaces are joined by the monitor around the clone, so the
/// child inherits them.
pub fn clone_flags(spec: &ContainerSpec) -> CloneFlags {
    let ns = &spec.namespaces;
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID;
    for (choice, flag) in [
        (&ns.uts, CloneFlags::CLONE_NEWUTS),
        (&ns.ipc, CloneFlags::CLONE_NEWIPC),
        (&ns.net, CloneFlags::CLONE_NEWNET),
    ] {
        if *choice == NsChoice::New {
            flags |= flag;
        }
    }
    if ns.user.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    flags
}

/// The text of a `uid_map`/`gid_map` file.
pub fn map_text(entries: &[(u32, u32, u32)]) -> String {
    entries
        .iter()
        .map(|(inside, outside, count)| format!("{inside} {outside} {count}\n"))
        .collect()
}

/// The monitor's own namespaces, to go back to after the clone.
struct Joined {
    saved: Vec<(OwnedFd, CloneFlags, &'static str)>,
}

impl Joined {
    fn restore(self, domain: &str) -> Result<(), LaunchError> {
        for (fd, flag, kind) in self.saved.into_iter().rev() {
            linux::setns(&fd, flag).map_err(|source| LaunchError::RestoreNamespace {
                domain: domain.to_string(),
                kind,
                source,
            })?;
        }
        Ok(())
    }
}

/// Join the namespaces the container shares with another process or a
/// namespace file, so that the clone inherits them. This is done by the
/// monitor rather than the child: a child already inside a new user
/// namespace has no right to join namespaces owned by the host's.
fn join_shared(spec: &ContainerSpec) -> Result<Joined, LaunchError> {
    let ns = &spec.namespaces;
    let mut joined = Joined { saved: Vec::new() };
    for (choice, flag, kind) in [
        (&ns.net, CloneFlags::CLONE_NEWNET, "net"),
        (&ns.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (&ns.uts, CloneFlags::CLONE_NEWUTS, "uts"),
    ] {
        let path = match choice {
            NsChoice::New | NsChoice::Host => continue,
            NsChoice::Path(path) => path.clone(),
            NsChoice::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/{kind}")),
        };
        let err = |source| LaunchError::JoinNamespace {
            domain: spec.name.clone(),
            path: path.clone(),
            source,
        };
        let result = linux::open_namespace(&path).and_then(|target| {
            let own = linux::open_namespace(Path::new(&format!("/proc/thread-self/ns/{kind}")))?;
            linux::setns(&target, flag)?;
            Ok(own)
        });
        match result {
            Ok(own) => joined.saved.push((own, flag, kind)),
            Err(e) => {
                joined.restore(&spec.name)?;
                return Err(err(e));
            }
        }
    }
    Ok(joined)
}

/// Kill and reap a child that will not be released.
fn abandon(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// Start the container's init. Returns once init has been executed, or
/// with the reason it could not be, the child reaped.
pub fn launch(ctx: LaunchContext<'_>) -> Result<Launched, LaunchError> {
    let spec = ctx.spec;
    let domain = || spec.name.clone();
    if spec.version != SPEC_VERSION {
        return Err(LaunchError::SpecVersion {
            domain: domain(),
            found: spec.version,
        });
    }
    // Created here, as host root: a child in a user namespace may not
    // write to the run directory.
    let staging = setup::staging_root(spec);
    match Linux.mkdir(&staging, 0o755) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(source) => {
            return Err(LaunchError::Staging {
                domain: domain(),
                path: staging,
                source,
            });
        }
    }
    let pipe_err = |source| LaunchError::Pipe {
        domain: domain(),
        source,
    };
    let (sync_r, sync_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;

    let joined = join_shared(spec)?;
    let forked = linux::clone_fork(clone_flags(spec));
    let (pid, pidfd) = match forked {
        Ok(Forked::Child) => {
            drop(sync_w);
            drop(err_r);
            child(spec, ctx.console_slaves, sync_r, err_w)
        }
        Ok(Forked::Parent { pid, pidfd }) => (pid, pidfd),
        Err(source) => {
            joined.restore(&spec.name)?;
            return Err(LaunchError::Clone {
                domain: domain(),
                source,
            });
        }
    };
    drop(sync_r);
    drop(err_w);
    if let Err(e) = joined.restore(&spec.name) {
        abandon(pid);
        return Err(e);
    }

    if let Some(map) = &spec.namespaces.user
        && let Err(e) = write_id_maps(spec, pid, map)
    {
        abandon(pid);
        return Err(e);
    }
    if let Err(message) = (ctx.place_in_cgroup)(pid) {
        abandon(pid);
        return Err(LaunchError::Cgroup {
            domain: domain(),
            message,
        });
    }
    // Release the child. If it died already the write fails (EPIPE); its
    // report, if any, is read below either way.
    let _ = nix::unistd::write(sync_w.as_fd(), &[1]);
    drop(sync_w);

    let mut report = Vec::new();
    if let Err(source) = File::from(err_r).read_to_end(&mut report) {
        abandon(pid);
        return Err(LaunchError::Report {
            domain: domain(),
            source,
        });
    }
    if report.is_empty() {
        // EOF without a word: the pipe closed on exec.
        return Ok(Launched { pid, pidfd });
    }
    let _ = waitpid(pid, None);
    match serde_json::from_slice::<SetupError>(&report) {
        Ok(error) => Err(LaunchError::Setup {
            domain: domain(),
            error,
        }),
        Err(_) => Err(LaunchError::BadReport {
            domain: domain(),
            report: String::from_utf8_lossy(&report).into_owned(),
        }),
    }
}

fn write_id_maps(spec: &ContainerSpec, pid: Pid, map: &IdMapping) -> Result<(), LaunchError> {
    for (file, entries) in [("uid_map", &map.uid), ("gid_map", &map.gid)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        Linux
            .write_file(&path, map_text(entries).as_bytes())
            .map_err(|source| LaunchError::IdMap {
                domain: spec.name.clone(),
                path,
                source,
            })?;
    }
    Ok(())
}

/// The cloned child: wait for the release, set the container up and exec
/// init; on failure, report over `err_w` and `_exit(127)`. Never returns
/// up the monitor's stack, not even on a panic.
fn child(spec: &ContainerSpec, console_slaves: &[PathBuf], sync_r: OwnedFd, err_w: OwnedFd) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut byte = [0u8; 1];
        let released = loop {
            match nix::unistd::read(sync_r.as_fd(), &mut byte) {
                Err(Errno::EINTR) => continue,
                Ok(1) => break true,
                _ => break false,
            }
        };
        drop(sync_r);
        if !released {
            // The monitor failed or went away; it has no use for a report.
            linux::exit_now(1);
        }
        match Setup::new(&Linux, spec, console_slaves).run() {
            Ok(never) => match never {},
            Err(error) => error,
        }
    }));
    let error = outcome.unwrap_or_else(|_| SetupError {
        step: Step::Internal,
        path: None,
        errno: 0,
        detail: Some("the setup code panicked".into()),
    });
    if let Ok(bytes) = serde_json::to_vec(&error) {
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            match nix::unistd::write(err_w.as_fd(), rest) {
                Ok(n) => rest = &rest[n..],
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
    linux::exit_now(127)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::lxc::spec::{InitSpec, Namespaces, RootFs};

    fn spec(ns: Namespaces) -> ContainerSpec {
        ContainerSpec {
            version: SPEC_VERSION,
            name: "web".into(),
            uuid: uuid::Uuid::nil(),
            hostname: "web".into(),
            namespaces: ns,
            root: RootFs::Host,
            mounts: vec![],
            devices: vec![],
            init: InitSpec {
                path: "/sbin/init".into(),
                args: vec![],
                env: vec![],
                cwd: "/".into(),
                user: None,
                group: None,
            },
            capabilities: vec![],
            no_new_privs: false,
            masked_paths: vec![],
            readonly_paths: vec![],
            consoles: 1,
            cgroup: Default::default(),
            security: None,
            seccomp: None,
            run_dir: "/run/lxvirt".into(),
        }
    }

    #[test]
    fn clone_flags_follow_the_namespace_choices() {
        let all_new = spec(Namespaces {
            net: NsChoice::New,
            ipc: NsChoice::New,
            uts: NsChoice::New,
            user: Some(IdMapping {
                uid: vec![(0, 100000, 65536)],
                gid: vec![(0, 100000, 65536)],
            }),
        });
        assert_eq!(
            clone_flags(&all_new),
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWUSER
        );
        let shared = spec(Namespaces {
            net: NsChoice::Host,
            ipc: NsChoice::Pid(42),
            uts: NsChoice::Path("/run/uts/x".into()),
            user: None,
        });
        assert_eq!(
            clone_flags(&shared),
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID
        );
    }

    #[test]
    fn id_map_text() {
        assert_eq!(
            map_text(&[(0, 100000, 1000), (1000, 1000, 1)]),
            "0 100000 1000\n1000 1000 1\n"
        );
    }

    #[test]
    fn launch_refuses_another_spec_version() {
        let mut s = spec(Namespaces {
            net: NsChoice::New,
            ipc: NsChoice::New,
            uts: NsChoice::New,
            user: None,
        });
        s.version = SPEC_VERSION + 1;
        let mut place = |_: Pid| Ok(());
        let err = launch(LaunchContext {
            spec: &s,
            console_slaves: &[],
            place_in_cgroup: &mut place,
        })
        .unwrap_err();
        assert!(matches!(err, LaunchError::SpecVersion { .. }), "{err}");
    }

    #[test]
    fn the_childs_error_is_shown_with_the_domain() {
        let err = LaunchError::Setup {
            domain: "web".into(),
            error: SetupError {
                step: Step::Exec,
                path: Some("/sbin/init".into()),
                errno: Errno::ENOENT as i32,
                detail: None,
            },
        };
        assert_eq!(
            err.to_string(),
            "container 'web': cannot execute init /sbin/init inside the container: No such file or directory (ENOENT); check <init> and the root filesystem"
        );
        assert_eq!(err.setup_error().map(|e| e.step), Some(Step::Exec));
    }
}
