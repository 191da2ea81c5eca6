//! Launching a container's init: one fork-like clone, the monitor's part
//! (cgroup placement, release) and the child's part
//! ([`setup`](crate::lxc::setup)), with the child's failure carried back
//! over a close-on-exec pipe.
//!
//! The clone carries every namespace flag, so that a user namespace owns
//! the others (root inside may set its hostname, configure its network,
//! `reboot(2)`). With a user namespace the child cannot mount in a way
//! the host trusts, so a second, short-lived child, the *mounter*, cloned
//! into a new mount namespace with host root's credentials and joined to
//! the container's PID and network namespaces (for /proc and /sys), makes
//! every mount, stacks the root on a copy of the daemon's template mount
//! namespace ([`mount_template`](crate::lxc::mount_template); without one
//! it pivots), then joins the user namespace and unshares a mount
//! namespace it owns: the kernel locks every mount of that copy (masks
//! cannot be unmounted, read-only flags cannot be cleared). The container's
//! init joins that mount namespace and goes on.
//!
//! ```text
//! monitor                        init                     mounter
//! clone3(NEWUSER|NEWPID|...) ──► wait (sync socket)
//! write uid_map / gid_map
//! place_in_cgroup(pid)
//! setns(init's pid, net)
//! clone3(NEWNS) ─────────────────────────────────────────► mounts, the root,
//! network devices (netlink; network.rs)                    setns(user),
//! report: ready ◄───────────────────────────────────────── unshare(NEWNS)
//! open its mount ns; let it go ──────────────────────────► exit
//! release + mount ns fd ─────► setns(mnt); hostname,
//!                              console, ids, caps, label,
//!                              execve(init)
//! error pipe: EOF = exec'd ◄── (or a JSON SetupError)
//! report the start; reap the mounter
//! ```
//!
//! Without a user namespace the init makes its mounts itself, and the
//! monitor makes the network devices before it releases init.
//!
//! A spare monitor makes the first clone before its spec comes (an
//! [`EarlyInit`], in the namespaces most containers have), so that a start
//! does not wait for the kernel to create them, and the mounter's clone
//! with it (an [`EarlyMounter`]); each reads the spec when it comes
//! ([`handoff`](crate::lxc::handoff)), the mounter once init's ids are
//! mapped, then goes on as any init or mounter. A spec asking for other
//! namespaces gets fresh clones.
//!
//! [`launch`] must run in a single-threaded process (the monitor): the
//! child is a copy of the calling thread only and allocates.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lxc::handoff::{SpecReceiver, SpecSender, spec_handoff};
use crate::lxc::network::{ContainerNetwork, NetworkError};
use crate::lxc::protocol::{self, ProtocolError, errno_number};
use crate::lxc::setup::{self, Setup, SetupError, Step};
use crate::lxc::spec::{ContainerSpec, IdMapping, NsChoice, SPEC_VERSION};
use crate::sys::linux::{self, Forked};
use crate::sys::{CloneFlags, Errno, Linux, Syscalls};

/// What [`launch`] needs besides the spec.
pub struct LaunchContext<'a> {
    pub spec: &'a ContainerSpec,
    /// Called in the monitor (the parent) with the child's host pid after
    /// clone and before the child is released to set itself up: the
    /// monitor makes the container's cgroups and puts it into them there
    /// (with a user namespace, while the mounter makes the mounts). The
    /// error is the reason, for [`LaunchError::Cgroup`].
    pub place_in_cgroup: &'a mut dyn FnMut(Pid) -> Result<(), String>,
    /// An init cloned while the monitor waited for the spec, used when
    /// its namespaces are the spec's (else dropped: killed and reaped).
    pub early: Option<EarlyInit>,
    /// The template mount namespace the mounter stacks the root on
    /// (see [`mount_template`](crate::lxc::mount_template)); without it
    /// the mounter pivots.
    pub mount_template: Option<BorrowedFd<'a>>,
}

impl std::fmt::Debug for LaunchContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchContext")
            .field("spec", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// A running init: its host pid (a child of the caller, to be reaped by
/// it) and a pidfd for it, the masters of its consoles (ptys of its own
/// devpts instance, console 0 first), and the container's network
/// devices, to tear down when it has ended.
#[derive(Debug)]
pub struct Launched {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub consoles: Vec<OwnedFd>,
    pub network: Option<ContainerNetwork>,
    /// The mounter (user namespace only), exiting: its exit tears down
    /// the mount namespaces it left, an RCU grace period each. Dropping
    /// it waits for that and reaps it: do so once the start is reported,
    /// and before waiting for init, whose exit waits until every process
    /// of its PID namespace (the mounter's too) is reaped.
    pub mounter: Option<MounterProcess>,
}

/// Why a container's init could not be started. Serializable: the monitor
/// sends it to the daemon inside its [`MonitorError`](protocol::MonitorError),
/// which names the domain.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaunchError {
    #[error(
        "launch spec version {found} is not supported (expected {SPEC_VERSION}); restart the monitor with a matching lxvirtd"
    )]
    SpecVersion { found: u32 },
    #[error("cannot create the staging directory {}", path.display())]
    Staging {
        path: PathBuf,
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("cannot create the launch pipes")]
    Pipe {
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("cannot join the shared namespace {}; check <lxc:namespace>", path.display())]
    JoinNamespace {
        path: PathBuf,
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("cannot return the monitor to its own {namespace} namespace")]
    RestoreNamespace {
        namespace: String,
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("cannot clone the container's init")]
    Clone {
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("cannot create its {namespace} namespace inside its user namespace")]
    UserNamespace {
        namespace: String,
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("cannot write {}; check <idmap>", path.display())]
    IdMap {
        path: PathBuf,
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    /// The cgroup layer's message, causes included.
    #[error("cannot place init in its cgroups: {reason}")]
    Cgroup { reason: String },
    #[error("cannot read the setup report of init")]
    Report {
        #[source]
        #[serde(with = "errno_number")]
        source: Errno,
    },
    #[error("init's setup sent an unreadable report: {report:?}")]
    BadReport { report: String },
    #[error(transparent)]
    Setup { error: SetupError },
    /// An `<interface>` or `<hostdev type='net'>` could not be set up.
    #[error(transparent)]
    Network { error: Box<NetworkError> },
}

impl LaunchError {
    /// The child's own failure, when the setup inside the container failed.
    pub fn setup_error(&self) -> Option<&SetupError> {
        match self {
            LaunchError::Setup { error } => Some(error),
            _ => None,
        }
    }
}

/// The clone flags for a spec: new PID namespace always, a new mount
/// namespace without a user namespace (with one, init joins the
/// mounter's), UTS, IPC and network when they are new, a user namespace
/// with an id map. Shared namespaces are joined by the monitor around the
/// clone, so the child inherits them.
pub fn clone_flags(spec: &ContainerSpec) -> CloneFlags {
    let ns = &spec.namespaces;
    let mut flags = CloneFlags::CLONE_NEWPID;
    if ns.user.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    } else {
        flags |= CloneFlags::CLONE_NEWNS;
    }
    for (choice, flag) in [
        (&ns.uts, CloneFlags::CLONE_NEWUTS),
        (&ns.ipc, CloneFlags::CLONE_NEWIPC),
        (&ns.net, CloneFlags::CLONE_NEWNET),
    ] {
        if *choice == NsChoice::New {
            flags |= flag;
        }
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
    /// Join `target` (of `kind`, `flag`), remembering the monitor's own.
    /// For PID this changes only where the monitor's next child goes.
    fn join(
        &mut self,
        target: BorrowedFd<'_>,
        flag: CloneFlags,
        kind: &'static str,
    ) -> Result<(), Errno> {
        let own = linux::open_namespace(Path::new(&format!("/proc/thread-self/ns/{kind}")))?;
        linux::setns(target, flag)?;
        self.saved.push((own, flag, kind));
        Ok(())
    }

    fn restore(self) -> Result<(), LaunchError> {
        for (fd, flag, kind) in self.saved.into_iter().rev() {
            linux::setns(&fd, flag).map_err(|source| LaunchError::RestoreNamespace {
                namespace: kind.to_owned(),
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
            path: path.clone(),
            source,
        };
        let result =
            linux::open_namespace(&path).and_then(|target| joined.join(target.as_fd(), flag, kind));
        match result {
            Ok(()) => {}
            Err(e) => {
                joined.restore()?;
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

/// A cloned init waiting for its release, and the monitor's ends of the
/// launch's channels: the sync socket and the error pipe.
#[derive(Debug)]
struct Cloned {
    pid: Pid,
    pidfd: OwnedFd,
    sync_w: OwnedFd,
    err_r: OwnedFd,
}

/// Between the monitor and init: the sync socket (the release, the mount
/// namespace to join, and without a user namespace the consoles back) and
/// the error pipe (a setup report, or end of file at the exec).
struct Channels {
    sync_r: OwnedFd,
    sync_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
}

impl Channels {
    fn new() -> Result<Channels, LaunchError> {
        let pipe_err = |source| LaunchError::Pipe { source };
        let (sync_r, sync_w) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(pipe_err)?;
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;
        Ok(Channels {
            sync_r,
            sync_w,
            err_r,
            err_w,
        })
    }
}

/// Clones init for `spec`, in the shared namespaces it joins.
fn clone_init(spec: &ContainerSpec) -> Result<Cloned, LaunchError> {
    let Channels {
        sync_r,
        sync_w,
        err_r,
        err_w,
    } = Channels::new()?;
    let joined = join_shared(spec)?;
    let forked = linux::clone_fork(clone_flags(spec));
    let (pid, pidfd) = match forked {
        Ok(Forked::Child) => {
            drop(sync_w);
            drop(err_r);
            child(spec, sync_r, err_w)
        }
        Ok(Forked::Parent { pid, pidfd }) => (pid, pidfd),
        Err(source) => {
            joined.restore()?;
            return Err(LaunchError::Clone { source });
        }
    };
    drop(sync_r);
    drop(err_w);
    if let Err(e) = joined.restore() {
        abandon(pid);
        return Err(e);
    }
    Ok(Cloned {
        pid,
        pidfd,
        sync_w,
        err_r,
    })
}

/// The namespaces of the usual container, which a spare monitor clones an
/// [`EarlyInit`] into: a user namespace owning new PID, UTS, IPC and
/// network namespaces (the default id mapping, with `<privnet/>` or an
/// interface).
pub const USUAL_FLAGS: CloneFlags = CloneFlags::CLONE_NEWUSER
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC)
    .union(CloneFlags::CLONE_NEWNET);

/// The namespaces of an early init `spec` could use: `None` when it can
/// use none, as it joins shared namespaces (which the monitor does around
/// the clone) or has no user namespace (its mount namespace is copied at
/// the clone, and must be the host's of the launch).
pub fn early_flags(spec: &ContainerSpec) -> Option<CloneFlags> {
    let ns = &spec.namespaces;
    let joins = [&ns.net, &ns.ipc, &ns.uts]
        .into_iter()
        .any(|choice| matches!(choice, NsChoice::Path(_) | NsChoice::Pid(_)));
    (ns.user.is_some() && !joins).then(|| clone_flags(spec))
}

/// What an early init is called until its spec comes: a copy of the
/// monitor, it would otherwise pass for one (the same command line).
pub const EARLY_INIT_NAME: &std::ffi::CStr = c"lxvirt-early";

/// A container's init cloned before its spec is known, so that creating
/// its namespaces (a network namespace alone takes ~0.6 ms) is off the
/// start's path: a spare monitor makes one while it waits. It waits for a
/// spec ([`handoff`]), then goes on as any init; dropped unused, it is
/// killed and reaped.
#[derive(Debug)]
pub struct EarlyInit {
    flags: CloneFlags,
    spec: Option<SpecSender>,
    cloned: Option<Cloned>,
    /// Its mounter, when one could be cloned.
    mounter: Option<EarlyMounter>,
}

impl EarlyInit {
    /// Clones an init into new namespaces of `flags`: a user namespace
    /// and any of PID, UTS, IPC and network (`EINVAL` for other flags),
    /// and its mounter (which stacks the root on `template`, or pivots
    /// without one; when it cannot be cloned, the launch clones one).
    /// After [`LaunchError::RestoreNamespace`] the caller is left in
    /// init's namespaces.
    pub fn clone(
        flags: CloneFlags,
        template: Option<BorrowedFd<'_>>,
    ) -> Result<EarlyInit, LaunchError> {
        if !flags.contains(CloneFlags::CLONE_NEWUSER) || !USUAL_FLAGS.contains(flags) {
            return Err(LaunchError::Clone {
                source: Errno::EINVAL,
            });
        }
        let Channels {
            sync_r,
            sync_w,
            err_r,
            err_w,
        } = Channels::new()?;
        let (sender, receiver) = spec_handoff().map_err(|source| LaunchError::Pipe { source })?;
        match linux::clone_fork(flags) {
            Ok(Forked::Child) => {
                drop(sync_w);
                drop(err_r);
                drop(sender);
                early_child(flags, receiver, sync_r, err_w)
            }
            Ok(Forked::Parent { pid, pidfd }) => {
                drop(receiver);
                let mut early = EarlyInit {
                    flags,
                    spec: Some(sender),
                    cloned: Some(Cloned {
                        pid,
                        pidfd,
                        sync_w,
                        err_r,
                    }),
                    mounter: None,
                };
                let init_ends = early.channel_ends();
                early.mounter = match EarlyMounter::clone(pid, flags, template, init_ends) {
                    Ok(mounter) => Some(mounter),
                    Err(e @ LaunchError::RestoreNamespace { .. }) => return Err(e),
                    // The launch clones one.
                    Err(_) => None,
                };
                Ok(early)
            }
            Err(source) => Err(LaunchError::Clone { source }),
        }
    }

    /// The monitor's ends of init's channels.
    fn channel_ends(&self) -> Vec<RawFd> {
        let spec = self.spec.iter().flat_map(SpecSender::raw_fds);
        let channels = self
            .cloned
            .iter()
            .flat_map(|c| [c.sync_w.as_raw_fd(), c.err_r.as_raw_fd()]);
        spec.chain(channels).collect()
    }

    /// Its mounter's host pid, if it has one.
    pub fn mounter_pid(&self) -> Option<Pid> {
        self.mounter.as_ref().map(|m| m.child.process.pid)
    }

    /// Its host pid.
    pub fn pid(&self) -> Option<Pid> {
        self.cloned.as_ref().map(|cloned| cloned.pid)
    }

    /// Whether it is in the namespaces `spec` asks for.
    pub fn fits(&self, spec: &ContainerSpec) -> bool {
        early_flags(spec) == Some(self.flags)
    }

    /// Gives it the caller's priority (it inherited the spare's, lower)
    /// and `spec` (serialized); `None` when either fails (it is then
    /// dropped, and init cloned afresh). Its mounter comes with it, still
    /// waiting for the spec.
    fn give(mut self, spec: &[u8]) -> Option<(Cloned, Option<EarlyMounter>)> {
        follow_priority(self.pid()?).ok()?;
        self.spec.take()?.give(spec).ok()?;
        let mounter = self.mounter.take();
        Some((self.cloned.take()?, mounter))
    }
}

impl Drop for EarlyInit {
    fn drop(&mut self) {
        // The mounter first: it is in init's PID namespace, whose init's
        // exit waits until every process in it is reaped.
        drop(self.mounter.take());
        if let Some(cloned) = self.cloned.take() {
            abandon(cloned.pid);
        }
    }
}

/// Sets `pid`'s priority to the calling thread's.
fn follow_priority(pid: Pid) -> nix::Result<()> {
    use crate::sys::process::{nice_of, set_nice};
    let own = nice_of(0)?;
    if nice_of(pid.as_raw())? != own {
        set_nice(pid.as_raw(), own)?;
    }
    Ok(())
}

/// The early init: wait for the spec, then go on as [`child`]. Reports a
/// spec it cannot read; ends quietly when the monitor goes away or has no
/// use for it.
///
/// In a network namespace of its own it first brings the loopback up, as
/// every such container's setup does: that is off the start's path then
/// (the kernel sets up loopback's addresses and routes, ~0.1 ms, and wakes
/// a worker), and setup's own call finds it up. A failure here is left
/// for setup to meet and report.
fn early_child(flags: CloneFlags, spec: SpecReceiver, sync_r: OwnedFd, err_w: OwnedFd) -> ! {
    let _ = nix::sys::prctl::set_name(EARLY_INIT_NAME);
    if flags.contains(CloneFlags::CLONE_NEWNET) {
        let _ = Linux.loopback_up();
    }
    let read = std::panic::catch_unwind(|| {
        let Some(bytes) = spec.wait() else {
            linux::exit_now(1)
        };
        serde_json::from_slice::<ContainerSpec>(&bytes).map_err(|e| unreadable_spec(&e))
    });
    let error = match read {
        Ok(Ok(spec)) => child(&spec, sync_r, err_w),
        Ok(Err(error)) => error,
        Err(_) => panicked(),
    };
    if let Ok(bytes) = serde_json::to_vec(&error) {
        write_all(err_w.as_fd(), &bytes);
    }
    linux::exit_now(127)
}

/// An early process's spec did not parse.
fn unreadable_spec(error: &serde_json::Error) -> SetupError {
    SetupError {
        step: Step::Release,
        path: None,
        errno: 0,
        detail: Some(format!("cannot read the launch spec: {error}")),
    }
}

/// Start the container's init. Returns once init has been executed, or
/// with the reason it could not be, the child reaped.
pub fn launch(ctx: LaunchContext<'_>) -> Result<Launched, LaunchError> {
    let spec = ctx.spec;
    if spec.version != SPEC_VERSION {
        return Err(LaunchError::SpecVersion {
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
                path: staging,
                source,
            });
        }
    }
    // Serialized once, for both early processes. Init gets it first, so
    // that it reads it before the mounter gets the other CPU (measured:
    // given after the cgroups instead, when the monitor waits anyway,
    // each start took 0.2-0.5 ms longer).
    let early = ctx.early.filter(|early| early.fits(spec));
    let bytes = match early {
        Some(_) => serde_json::to_vec(spec).unwrap_or_default(),
        None => Vec::new(),
    };
    let given = early.and_then(|early| early.give(&bytes));
    let (
        Cloned {
            pid,
            pidfd,
            sync_w,
            err_r,
        },
        early_mounter,
    ) = match given {
        Some(given) => given,
        None => (clone_init(spec)?, None),
    };

    if let Some(map) = &spec.namespaces.user
        && let Err(e) = write_id_maps(pid, map)
    {
        drop(early_mounter);
        abandon(pid);
        return Err(e);
    }
    let place_in_cgroup = ctx.place_in_cgroup;
    // Init's cgroups, then in init's new network namespace, before init
    // goes on, its devices (undone on drop if the launch fails from here
    // on). With a user namespace, both while the mounter makes the mounts,
    // on another CPU.
    let mut place_and_set_up_network = || {
        place_in_cgroup(pid).map_err(|reason| LaunchError::Cgroup { reason })?;
        ContainerNetwork::set_up(spec, pid).map_err(|error| LaunchError::Network {
            error: Box::new(error),
        })
    };
    let started = match &spec.namespaces.user {
        Some(_) => Mounter::start(
            spec,
            pid,
            ctx.mount_template,
            early_mounter.map(|mounter| (mounter, bytes.as_slice())),
            place_and_set_up_network,
        )
        .map(|(mounter, network)| (Some(mounter), network)),
        None => place_and_set_up_network().map(|network| (None, network)),
    };
    let (mut mounter, network) = match started {
        Ok(started) => started,
        Err(e) => {
            abandon(pid);
            return Err(e);
        }
    };
    // Release the child, with the mount namespace to join. If it died
    // already the send fails; its report, if any, is read below either way.
    let mounts: Vec<RawFd> = mounter.iter().map(|m| m.mnt.as_raw_fd()).collect();
    let _ = protocol::send(sync_w.as_fd(), &true, &mounts);
    // Without a user namespace init makes its mounts, consoles included,
    // and sends the consoles back; a child that failed sends nothing (its
    // end closes) and reports on the error pipe.
    let consoles = match mounter {
        Some(ref mut mounter) => std::mem::take(&mut mounter.consoles),
        None => loop {
            match protocol::recv::<String>(sync_w.as_fd()) {
                Err(ProtocolError::Io(Errno::EINTR)) => continue,
                Ok((_, fds)) => break fds,
                Err(_) => break Vec::new(),
            }
        },
    };
    drop(sync_w);

    let mut report = Vec::new();
    let read = File::from(err_r).read_to_end(&mut report);
    // Its exit runs meanwhile; init has joined the namespace it made.
    let mounter = mounter.map(|mounter| mounter.process);
    if let Err(source) = read {
        // Reaped first: it is in init's PID namespace, whose init's exit
        // waits until every process in it is reaped.
        drop(mounter);
        abandon(pid);
        return Err(LaunchError::Report {
            source: linux::io_errno(source),
        });
    }
    if report.is_empty() {
        // EOF without a word: the pipe closed on exec.
        return Ok(Launched {
            pid,
            pidfd,
            consoles,
            network,
            mounter,
        });
    }
    drop(mounter);
    let _ = waitpid(pid, None);
    Err(setup_failure(&report))
}

/// The mounter of a container with a user namespace, waiting to be let
/// go, and its mount namespace (every mount locked) for init to join.
struct Mounter {
    /// Held to reap the process when the launch is done with it.
    process: MounterProcess,
    mnt: OwnedFd,
    /// The console masters it opened.
    consoles: Vec<OwnedFd>,
}

/// The mounter process: let go (its hold pipe closed) and reaped on drop.
#[derive(Debug)]
pub struct MounterProcess {
    pid: Pid,
    hold: Option<OwnedFd>,
}

impl Mounter {
    /// Lets the mounter make the mounts — a spare's early one, given the
    /// spec now, else one cloned here — and waits for its report;
    /// `meanwhile` runs in the monitor, in its own namespaces, while the
    /// mounter works.
    fn start<T>(
        spec: &ContainerSpec,
        init: Pid,
        template: Option<BorrowedFd<'_>>,
        early: Option<(EarlyMounter, &[u8])>,
        meanwhile: impl FnOnce() -> Result<T, LaunchError>,
    ) -> Result<(Mounter, T), LaunchError> {
        let child = match early.and_then(|(early, bytes)| early.give(bytes)) {
            Some(child) => child,
            None => MounterChild::clone(
                init,
                spec.namespaces.net == NsChoice::New,
                |userns, report_w, hold_r| mounter(spec, userns, template, report_w, hold_r),
            )?,
        };
        let done = meanwhile()?;
        Ok((child.ready()?, done))
    }
}

/// A mounter cloned into init's PID namespace (and network namespace:
/// its /proc and /sys are the container's), in a mount namespace of its
/// own; its report comes on `report_r`.
#[derive(Debug)]
struct MounterChild {
    process: MounterProcess,
    report_r: OwnedFd,
}

impl MounterChild {
    /// Clones the mounter into `init`'s namespaces (its network namespace
    /// when `join_net`); the child runs `body` with the user namespace to
    /// enter at the end, its end of the report socket and of the hold pipe
    /// (it ends the process).
    fn clone(
        init: Pid,
        join_net: bool,
        body: impl FnOnce(OwnedFd, OwnedFd, OwnedFd),
    ) -> Result<MounterChild, LaunchError> {
        let pipe_err = |source| LaunchError::Pipe { source };
        let open = |kind: &'static str| {
            linux::open_namespace(Path::new(&format!("/proc/{init}/ns/{kind}")))
                .map_err(user_namespace_error(kind))
        };
        let userns = open("user")?;
        let mut joined = Joined { saved: Vec::new() };
        let mut joins = vec![(CloneFlags::CLONE_NEWPID, "pid")];
        if join_net {
            joins.push((CloneFlags::CLONE_NEWNET, "net"));
        }
        for (flag, kind) in joins {
            if let Err(e) = open(kind).and_then(|ns| {
                joined
                    .join(ns.as_fd(), flag, kind)
                    .map_err(user_namespace_error(kind))
            }) {
                joined.restore()?;
                return Err(e);
            }
        }
        // A socket, for the console masters that come with the report.
        let (report_r, report_w) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(pipe_err)?;
        let (hold_r, hold_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(pipe_err)?;
        let pid = match linux::clone_fork(CloneFlags::CLONE_NEWNS) {
            Ok(Forked::Child) => {
                drop(report_r);
                drop(hold_w);
                body(userns, report_w, hold_r);
                // Unreachable: the bodies end the process.
                linux::exit_now(1)
            }
            Ok(Forked::Parent { pid, .. }) => pid,
            Err(source) => {
                joined.restore()?;
                return Err(LaunchError::Clone { source });
            }
        };
        let process = MounterProcess {
            pid,
            hold: Some(hold_w),
        };
        if let Err(e) = joined.restore() {
            // An early one waits for a spec that will not come.
            process.kill();
            return Err(e);
        }
        Ok(MounterChild { process, report_r })
    }

    /// Waits for the mounter's report and takes its mount namespace.
    fn ready(self) -> Result<Mounter, LaunchError> {
        let MounterChild {
            mut process,
            report_r,
        } = self;
        let consoles = loop {
            match protocol::recv::<MounterReport>(report_r.as_fd()) {
                Err(ProtocolError::Io(Errno::EINTR)) => continue,
                Ok((MounterReport::Ready, consoles)) => break consoles,
                Ok((MounterReport::Failed(error), _)) => {
                    return Err(LaunchError::Setup { error });
                }
                Err(ProtocolError::Io(source)) => return Err(LaunchError::Report { source }),
                Err(other) => {
                    return Err(LaunchError::BadReport {
                        report: other.to_string(),
                    });
                }
            }
        };
        let mnt = linux::open_namespace(Path::new(&format!("/proc/{}/ns/mnt", process.pid)))
            .map_err(user_namespace_error("mount"))?;
        // The descriptor keeps the mount namespace: the mounter may exit.
        drop(process.hold.take());
        Ok(Mounter {
            process,
            mnt,
            consoles,
        })
    }
}

fn user_namespace_error(kind: &'static str) -> impl Fn(Errno) -> LaunchError {
    move |source| LaunchError::UserNamespace {
        namespace: kind.to_owned(),
        source,
    }
}

/// A mounter cloned with an [`EarlyInit`], into its namespaces, before
/// the spec is known: cloning it (joining init's namespaces, copying the
/// monitor's mount table) is then off the start's path. It waits for the
/// spec ([`handoff`]), given once init's ids are mapped (the idmapped
/// root needs them); dropped unused, it ends on its own.
#[derive(Debug)]
pub struct EarlyMounter {
    /// Declared first: dropped first, so that it ends before it is reaped.
    spec: Option<SpecSender>,
    child: MounterChild,
}

impl EarlyMounter {
    /// Clones it for `init`, cloned with `flags`; `init_ends` are the
    /// monitor's ends of init's channels, closed in the mounter (else
    /// init would not learn that the monitor went away).
    fn clone(
        init: Pid,
        flags: CloneFlags,
        template: Option<BorrowedFd<'_>>,
        init_ends: Vec<RawFd>,
    ) -> Result<EarlyMounter, LaunchError> {
        let (sender, receiver) = spec_handoff().map_err(|source| LaunchError::Pipe { source })?;
        let own_ends = sender.raw_fds();
        let child = MounterChild::clone(
            init,
            flags.contains(CloneFlags::CLONE_NEWNET),
            |userns, report_w, hold_r| {
                for fd in init_ends.into_iter().chain(own_ends) {
                    let _ = nix::unistd::close(fd);
                }
                early_mounter(receiver, userns, template, report_w, hold_r)
            },
        )?;
        Ok(EarlyMounter {
            spec: Some(sender),
            child,
        })
    }

    /// Gives it the caller's priority and `spec` (serialized); `None`
    /// when either fails (it is then dropped, and a mounter cloned
    /// afresh).
    fn give(mut self, spec: &[u8]) -> Option<MounterChild> {
        follow_priority(self.child.process.pid).ok()?;
        self.spec.take()?.give(spec).ok()?;
        Some(self.child)
    }
}

/// What a spare's early mounter is called until its spec comes.
pub const EARLY_MOUNTER_NAME: &std::ffi::CStr = c"lxvirt-early-mt";

/// The early mounter: wait for the spec, then go on as [`mounter`]. Ends
/// quietly when the monitor goes away or has no use for it.
fn early_mounter(
    spec: SpecReceiver,
    userns: OwnedFd,
    template: Option<BorrowedFd<'_>>,
    report_w: OwnedFd,
    hold_r: OwnedFd,
) -> ! {
    let _ = nix::sys::prctl::set_name(EARLY_MOUNTER_NAME);
    let Some(bytes) = spec.wait() else {
        linux::exit_now(1)
    };
    match serde_json::from_slice::<ContainerSpec>(&bytes) {
        Ok(spec) => mounter(&spec, userns, template, report_w, hold_r),
        Err(e) => {
            let report = MounterReport::Failed(unreadable_spec(&e));
            let _ = protocol::send(report_w.as_fd(), &report, &[]);
            linux::exit_now(1)
        }
    }
}

impl MounterProcess {
    /// Its host pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Kills and reaps it.
    fn kill(self) {
        let _ = kill(self.pid, Signal::SIGKILL);
    }
}

impl Drop for MounterProcess {
    fn drop(&mut self) {
        // EOF on its hold pipe lets it exit (already, once it reported).
        drop(self.hold.take());
        let _ = waitpid(self.pid, None);
    }
}

/// The mounter's report; `Ready` comes with the console masters.
#[derive(Debug, Serialize, Deserialize)]
enum MounterReport {
    Ready,
    Failed(SetupError),
}

/// The mounter: make every mount, make the root (stacked on `template`'s
/// copy, else by pivot_root), enter the user namespace, report and wait
/// to be let go. Never returns.
fn mounter(
    spec: &ContainerSpec,
    userns: OwnedFd,
    template: Option<BorrowedFd<'_>>,
    report_w: OwnedFd,
    hold_r: OwnedFd,
) -> ! {
    let mut setup = Setup::new(&Linux, spec).with_userns(userns.as_fd());
    if let Some(template) = template {
        setup = setup.with_template(template);
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup.make_mounts()));
    let (report, consoles) = match outcome {
        Ok(Ok(())) => (MounterReport::Ready, setup.take_consoles()),
        Ok(Err(error)) => (MounterReport::Failed(error), Vec::new()),
        Err(_) => (MounterReport::Failed(panicked()), Vec::new()),
    };
    let fds: Vec<RawFd> = consoles.iter().map(|fd| fd.as_raw_fd()).collect();
    let _ = protocol::send(report_w.as_fd(), &report, &fds);
    drop(report_w);
    drop(consoles);
    // Until the monitor holds the mount namespace (it closes the pipe):
    // a mount namespace without a process or a descriptor is freed.
    let mut byte = [0u8; 1];
    while let Err(Errno::EINTR) = nix::unistd::read(hold_r.as_fd(), &mut byte) {}
    linux::exit_now(0)
}

fn panicked() -> SetupError {
    SetupError {
        step: Step::Internal,
        path: None,
        errno: 0,
        detail: Some("the setup code panicked".into()),
    }
}

fn write_all(fd: BorrowedFd<'_>, mut rest: &[u8]) {
    while !rest.is_empty() {
        match nix::unistd::write(fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
}

/// The error a child's setup report stands for.
fn setup_failure(report: &[u8]) -> LaunchError {
    match serde_json::from_slice::<SetupError>(report) {
        Ok(error) => LaunchError::Setup { error },
        Err(_) => LaunchError::BadReport {
            report: String::from_utf8_lossy(report).into_owned(),
        },
    }
}

fn write_id_maps(pid: Pid, map: &IdMapping) -> Result<(), LaunchError> {
    for (file, entries) in [("uid_map", &map.uid), ("gid_map", &map.gid)] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        Linux
            .write_file(&path, map_text(entries).as_bytes())
            .map_err(|source| LaunchError::IdMap { path, source })?;
    }
    Ok(())
}

/// The cloned child: wait for the release, set the container up and exec
/// init; on failure, report over `err_w` and `_exit(127)`. Never returns
/// up the monitor's stack, not even on a panic.
fn child(spec: &ContainerSpec, sync_r: OwnedFd, err_w: OwnedFd) -> ! {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let released = loop {
            match protocol::recv::<bool>(sync_r.as_fd()) {
                Err(ProtocolError::Io(Errno::EINTR)) => continue,
                Ok((true, fds)) => break Some(fds),
                _ => break None,
            }
        };
        let Some(mut fds) = released else {
            // The monitor failed or went away; it has no use for a report.
            linux::exit_now(1);
        };
        let setup = Setup::new(&Linux, spec);
        let mounts = fds.pop();
        let setup = match &mounts {
            Some(mnt) => setup.with_mounts(mnt.as_fd()),
            // The consoles go back on the same socket (close-on-exec).
            None => setup.with_console_sink(sync_r.as_fd()),
        };
        match setup.run() {
            Ok(never) => match never {},
            Err(error) => error,
        }
    }));
    let error = outcome.unwrap_or_else(|_| panicked());
    if let Ok(bytes) = serde_json::to_vec(&error) {
        write_all(err_w.as_fd(), &bytes);
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
            interfaces: vec![],
            host_interfaces: vec![],
            loop_devices: vec![],
            console_log: None,
        }
    }

    #[test]
    fn clone_flags_follow_the_namespace_choices() {
        let all_new = spec(Namespaces {
            net: NsChoice::New,
            ipc: NsChoice::New,
            uts: NsChoice::New,
            user: None,
        });
        assert_eq!(
            clone_flags(&all_new),
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWNET
        );
        // With a user namespace, which owns the others, init joins the
        // mounter's mount namespace instead of making its own.
        let mut userns = all_new.clone();
        userns.namespaces.user = Some(IdMapping {
            uid: vec![(0, 100000, 65536)],
            gid: vec![(0, 100000, 65536)],
            idmapped_root: true,
        });
        assert_eq!(
            clone_flags(&userns),
            CloneFlags::CLONE_NEWUSER
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWNET
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

    /// An early init serves a spec with a user namespace that joins no
    /// shared namespace, in the namespaces the spec's clone would make.
    #[test]
    fn early_inits_serve_user_namespaces_that_join_nothing() {
        let user = Some(IdMapping {
            uid: vec![(0, 100000, 65536)],
            gid: vec![(0, 100000, 65536)],
            idmapped_root: true,
        });
        let with = |net: NsChoice, user: Option<IdMapping>| {
            spec(Namespaces {
                net,
                ipc: NsChoice::New,
                uts: NsChoice::New,
                user,
            })
        };
        assert_eq!(
            early_flags(&with(NsChoice::New, user.clone())),
            Some(USUAL_FLAGS)
        );
        assert_eq!(
            early_flags(&with(NsChoice::Host, user.clone())),
            Some(USUAL_FLAGS - CloneFlags::CLONE_NEWNET)
        );
        assert_eq!(early_flags(&with(NsChoice::Pid(7), user.clone())), None);
        assert_eq!(
            early_flags(&with(NsChoice::Path("/run/netns/a".into()), user)),
            None
        );
        assert_eq!(early_flags(&with(NsChoice::New, None)), None);
        // Only a user namespace and the ones it may own: no process made.
        for flags in [
            CloneFlags::CLONE_NEWPID,
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS,
        ] {
            assert!(
                matches!(
                    EarlyInit::clone(flags, None),
                    Err(LaunchError::Clone {
                        source: Errno::EINVAL
                    })
                ),
                "{flags:?}"
            );
        }
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
            place_in_cgroup: &mut place,
            early: None,
            mount_template: None,
        })
        .unwrap_err();
        assert!(matches!(err, LaunchError::SpecVersion { .. }), "{err}");
    }

    #[test]
    fn the_childs_error_names_the_step_the_path_the_errno_and_the_fix() {
        let err = LaunchError::Setup {
            error: SetupError {
                step: Step::Exec,
                path: Some("/sbin/init".into()),
                errno: Errno::ENOENT as i32,
                detail: None,
            },
        };
        assert_eq!(
            err.to_string(),
            "cannot execute init /sbin/init inside the container: No such file or directory (ENOENT); check <init> and the root filesystem"
        );
        assert_eq!(err.setup_error().map(|e| e.step), Some(Step::Exec));
    }

    /// The monitor sends these to the daemon: they come back whole, the
    /// errno of their source included.
    #[test]
    fn launch_errors_cross_as_json_with_their_errno() {
        let err = LaunchError::JoinNamespace {
            path: "/run/netns/red".into(),
            source: Errno::EPERM,
        };
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"join_namespace","path":"/run/netns/red","source":1}"#
        );
        let back: LaunchError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
        assert_eq!(
            crate::error_chain::error_chain(&back),
            "cannot join the shared namespace /run/netns/red; check <lxc:namespace>: EPERM: Operation not permitted"
        );
    }
}
