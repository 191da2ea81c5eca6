//! The container's own setup, run by the cloned child once the monitor
//! has released it: mounts, the new root, /proc, /sys, /dev, the console,
//! hostname, identity, capabilities and finally execve of init.
//!
//! Every kernel call goes through [`Syscalls`], so the sequence for a given
//! [`ContainerSpec`] is unit-tested with the recording double. A failing
//! step becomes a [`SetupError`] naming the step, the path and the errno,
//! which the child sends to the monitor (see `launch`).

use std::cell::{OnceCell, RefCell};
use std::convert::Infallible;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::lxc::spec::{
    ContainerSpec, DeviceKind, IdSpec, MountSource, MountSpec, NsChoice, RootFs,
};
use crate::seccomp::{Placement, Policy, SockFilter, placement};
use crate::storage::OverlayMount;
use crate::sys::{CloneFlags, Errno, FileKind, MntFlags, MsFlags, NodeKind, Syscalls};

/// The step of the setup that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Waiting for the monitor's go-ahead.
    Release,
    Signals,
    CgroupNamespace,
    /// Joining the container's user namespace.
    UserNamespace,
    /// The mount namespace that locks the mounts (owned by the user
    /// namespace).
    LockMounts,
    /// Showing the root through an idmapped mount.
    IdmapRoot,
    BecomeRoot,
    MakePrivate,
    RootFs,
    LoopDevice,
    Mount,
    Proc,
    Sys,
    Dev,
    DeviceNode,
    Devpts,
    Console,
    ReadonlyPath,
    MaskPath,
    PivotRoot,
    Hostname,
    Loopback,
    ConsoleStdio,
    InitUser,
    InitGroup,
    Capabilities,
    SetIds,
    NoNewPrivs,
    Seccomp,
    SecurityLabel,
    Chdir,
    Exec,
    /// The setup code itself failed (a bug).
    Internal,
}

/// Why the container's setup failed: the step, the path it concerned (as
/// seen inside the container where that applies), the errno and any
/// detail. Sent from the child to the monitor as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupError {
    pub step: Step,
    pub path: Option<PathBuf>,
    /// The raw errno; 0 when the failure is not a system call's.
    pub errno: i32,
    pub detail: Option<String>,
}

impl SetupError {
    fn new(step: Step, path: Option<&Path>, errno: Errno) -> SetupError {
        SetupError {
            step,
            path: path.map(Path::to_path_buf),
            errno: errno as i32,
            detail: None,
        }
    }

    fn detail(step: Step, detail: String) -> SetupError {
        SetupError {
            step,
            path: None,
            errno: 0,
            detail: Some(detail),
        }
    }

    /// The errno, when the failure was a system call's.
    pub fn errno(&self) -> Option<Errno> {
        (self.errno != 0).then(|| Errno::from_raw(self.errno))
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let detail = self.detail.as_deref().unwrap_or("");
        let (what, hint) = match self.step {
            Step::Release => (
                "the monitor went away before the container was set up".to_string(),
                "",
            ),
            Step::Signals => ("cannot reset init's signal handlers".into(), ""),
            Step::CgroupNamespace => ("cannot create the container's cgroup namespace".into(), ""),
            Step::UserNamespace => (
                "cannot join the container's user namespace".into(),
                "; check the daemon's --userns-range and <idmap>",
            ),
            Step::LockMounts => (
                "cannot create the container's mount namespace inside its user namespace".into(),
                "",
            ),
            Step::IdmapRoot => (
                format!("cannot show the root {path} through an idmapped mount"),
                "; its filesystem may not support idmapped mounts (ext4, xfs and btrfs do, tmpfs since Linux 6.3; overlayfs, NFS and 9p do not): put the root on one that does, use an image root, or <lxvirt:userns mode='host'/>",
            ),
            Step::BecomeRoot => (
                "cannot become root in the container's user namespace".into(),
                "; check that <idmap> maps uid and gid 0",
            ),
            Step::MakePrivate => ("cannot make the container's mounts private".into(), ""),
            Step::RootFs => (
                format!("cannot mount the root filesystem {path}"),
                "; check the <filesystem> whose target is '/' (and, for an image, that its store is on a filesystem with idmapped mounts)",
            ),
            Step::LoopDevice => (
                format!("cannot attach {path} to a loop device"),
                "; check the image file and that loop devices are available",
            ),
            Step::Mount => (
                format!("cannot mount {path} inside the container"),
                "; check its <filesystem> element",
            ),
            Step::Proc => (format!("cannot mount /proc at {path}"), ""),
            Step::Sys => (format!("cannot mount /sys at {path}"), ""),
            Step::Dev => (format!("cannot set up the container's /dev at {path}"), ""),
            Step::DeviceNode => (
                format!("cannot create device node {path} inside the container"),
                "; check the device's <disk> or <hostdev> element",
            ),
            Step::Devpts => (format!("cannot mount devpts at {path}"), ""),
            Step::Console => (
                format!("cannot set up the console {path}"),
                "; check the <console> elements",
            ),
            Step::ReadonlyPath => (format!("cannot make {path} read-only"), ""),
            Step::MaskPath => (format!("cannot mask {path}"), ""),
            Step::PivotRoot => (format!("cannot switch to the container's root {path}"), ""),
            Step::Hostname => (format!("cannot set the hostname '{detail}'"), ""),
            Step::Loopback => ("cannot bring the loopback interface up".to_owned(), ""),
            Step::ConsoleStdio => (format!("cannot attach init's stdio to {path}"), ""),
            Step::InitUser => (
                detail.to_string(),
                "; check <inituser> and the container's /etc/passwd",
            ),
            Step::InitGroup => (
                detail.to_string(),
                "; check <initgroup> and the container's /etc/group",
            ),
            Step::Capabilities => ("cannot set init's capabilities".into(), ""),
            Step::SetIds => (
                format!("cannot switch init to {detail}"),
                "; check <inituser>, <initgroup> and <idmap>",
            ),
            Step::NoNewPrivs => ("cannot set no_new_privs".into(), ""),
            Step::Seccomp => (
                match detail {
                    "" => "cannot install the seccomp filter".to_owned(),
                    detail => format!("cannot build the seccomp filter: {detail}"),
                },
                "; check <lxvirt:seccomp>, or turn the filter off with mode='off'",
            ),
            Step::SecurityLabel => (
                format!("cannot set the SELinux label '{detail}' for init"),
                "; check the <seclabel> and that SELinux is enabled",
            ),
            Step::Chdir => (
                format!("cannot change to init's directory {path} inside the container"),
                "; check <initdir>",
            ),
            Step::Exec => (
                format!("cannot execute init {path} inside the container"),
                "; check <init> and the root filesystem",
            ),
            Step::Internal => (format!("the container setup failed: {detail}"), ""),
        };
        write!(f, "{what}")?;
        if let Some(errno) = self.errno() {
            write!(f, ": {} ({errno:?})", errno.desc())?;
        }
        if self.is_unmakeable_mount_point() {
            return write!(
                f,
                "; the root has no {path} (or a directory above it), and it cannot be made through the root's id mapping: create it in the root filesystem"
            );
        }
        write!(f, "{hint}")
    }
}

impl SetupError {
    /// A mount target missing from a root seen through an idmapped mount,
    /// which could not be made there: the kernel refuses to create a file
    /// whose owner the mapping cannot express (`EOVERFLOW`), and mounting
    /// itself never fails so.
    fn is_unmakeable_mount_point(&self) -> bool {
        self.path.is_some()
            && self.errno() == Some(Errno::EOVERFLOW)
            && matches!(
                self.step,
                Step::Proc
                    | Step::Sys
                    | Step::Dev
                    | Step::Devpts
                    | Step::Mount
                    | Step::DeviceNode
                    | Step::Console
                    | Step::ReadonlyPath
                    | Step::MaskPath
            )
    }
}

impl std::error::Error for SetupError {}

/// The host directory where the container's root is assembled before
/// it becomes the container's root: `run_dir/NAME.root`.
pub fn staging_root(spec: &ContainerSpec) -> PathBuf {
    spec.run_dir.join(format!("{}.root", spec.name))
}

/// The basic device nodes of every container: name, major, minor.
const BASIC_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Filesystem types tried first on block devices and image files, in this
/// order; the other block filesystems the kernel knows follow.
const PREFERRED_FS: [&str; 6] = ["ext4", "xfs", "btrfs", "squashfs", "erofs", "vfat"];

/// What to create at a missing mount target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    Dir,
    File,
}

/// The message init (or the mounter) sends with the console masters.
pub const CONSOLES_MESSAGE: &[u8] = b"\"consoles\"";

/// The container setup for one spec, driven through a [`Syscalls`].
#[derive(Debug)]
pub struct Setup<'a, S: Syscalls + ?Sized> {
    sys: &'a S,
    spec: &'a ContainerSpec,
    /// The masters of the console ptys opened from the container's own
    /// devpts instance, console 0 first, until they go to the monitor.
    consoles: RefCell<Vec<OwnedFd>>,
    /// The host path of the first masked directory, whose empty read-only
    /// mount is bound over every other one.
    first_mask: RefCell<Option<PathBuf>>,
    /// What masks directories: the empty directory `/dev/pts` of the
    /// container's `/dev` tmpfs, under its devpts mount, as a detached
    /// read-only mount. Nobody can reach it to write to it, and it costs
    /// no superblock of its own (each superblock costs the kernel
    /// per-memory-cgroup state in every container of the host); without
    /// it (a kernel before 5.12), masks get an empty tmpfs.
    empty_dir: RefCell<Option<OwnedFd>>,
    /// Init's, without a user namespace: where the console masters go.
    console_sink: Option<BorrowedFd<'a>>,
    /// The mounter's: the container's user namespace, joined once every
    /// mount is made.
    userns: Option<BorrowedFd<'a>>,
    /// Init's, in a user namespace: the mount namespace the mounter made.
    mounts: Option<BorrowedFd<'a>>,
    /// The mounter's: the template mount namespace (see
    /// [`mount_template`](crate::lxc::mount_template)) the container's
    /// root is stacked on instead of pivoting into it.
    template: Option<BorrowedFd<'a>>,
    /// The mount namespaces the mounter left, held until it exits: the
    /// last reference to a namespace tears its mounts down, with an RCU
    /// grace period, and the mounter's exit is off the start's path.
    left: RefCell<Vec<OwnedFd>>,
    /// The staging directory the new root is assembled at.
    root: PathBuf,
    block_types: OnceCell<Vec<String>>,
}

impl<'a, S: Syscalls + ?Sized> Setup<'a, S> {
    pub fn new(sys: &'a S, spec: &'a ContainerSpec) -> Self {
        Setup {
            sys,
            spec,
            consoles: RefCell::new(Vec::new()),
            first_mask: RefCell::new(None),
            empty_dir: RefCell::new(None),
            console_sink: None,
            userns: None,
            mounts: None,
            template: None,
            left: RefCell::new(Vec::new()),
            root: staging_root(spec),
            block_types: OnceCell::new(),
        }
    }

    /// For the mounter: the user namespace to join after the mounts.
    pub fn with_userns(mut self, userns: BorrowedFd<'a>) -> Self {
        self.userns = Some(userns);
        self
    }

    /// For init in a user namespace: the mounter's mount namespace.
    pub fn with_mounts(mut self, mounts: BorrowedFd<'a>) -> Self {
        self.mounts = Some(mounts);
        self
    }

    /// For the mounter: the template mount namespace to stack the root on.
    pub fn with_template(mut self, template: BorrowedFd<'a>) -> Self {
        self.template = Some(template);
        self
    }

    /// For init without a user namespace, which makes the mounts itself:
    /// the socket its console masters go to the monitor on.
    pub fn with_console_sink(mut self, sink: BorrowedFd<'a>) -> Self {
        self.console_sink = Some(sink);
        self
    }

    /// The console masters opened by the mounts (console 0 first); the
    /// setup keeps none.
    pub fn take_consoles(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut *self.consoles.borrow_mut())
    }

    /// The mounter's part (user namespace only): every mount, as host root
    /// in a mount namespace of the host's user namespace (block devices,
    /// idmapped mounts and masks all work), the root, then into the
    /// container's user namespace and a mount namespace it owns.
    pub fn make_mounts(&self) -> Result<(), SetupError> {
        self.sys.umask(0);
        self.mount_all()?;
        self.enter_user_namespace()
    }

    /// Everything from the child's release to execve of init. Returns only
    /// on failure (with the double: always, with `Step::Exec`).
    pub fn run(&self) -> Result<Infallible, SetupError> {
        let sys = self.sys;
        // Built first, so that a bad filter fails before anything is done.
        let filter = self.seccomp_program()?;
        sys.reset_signals()
            .map_err(|e| SetupError::new(Step::Signals, None, e))?;
        let umask = sys.umask(0);
        if self.spec.namespaces.user.is_some() {
            sys.setresgid(0)
                .and_then(|()| sys.setresuid(0))
                .map_err(|e| SetupError::new(Step::BecomeRoot, None, e))?;
            // Made by the mounter; joining also makes its root ours.
            let mounts = self
                .mounts
                .ok_or_else(|| SetupError::new(Step::LockMounts, None, Errno::EBADF))?;
            sys.setns(mounts, CloneFlags::CLONE_NEWNS)
                .map_err(|e| SetupError::new(Step::LockMounts, None, e))?;
        } else {
            self.mount_all()?;
            // The monitor waits for the consoles (none is a message too);
            // init keeps no master of its own console.
            let consoles = self.take_consoles();
            let sink = self
                .console_sink
                .ok_or_else(|| SetupError::new(Step::Console, None, Errno::EBADF))?;
            let borrowed: Vec<BorrowedFd<'_>> = consoles.iter().map(|fd| fd.as_fd()).collect();
            sys.send_fds(sink, CONSOLES_MESSAGE, &borrowed)
                .map_err(|e| SetupError::new(Step::Console, None, e))?;
        }
        // After the monitor placed us in the container's cgroups, so that
        // they are the root of the new cgroup namespace.
        sys.unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| SetupError::new(Step::CgroupNamespace, None, e))?;

        if self.spec.namespaces.net == NsChoice::New {
            sys.loopback_up()
                .map_err(|e| SetupError::new(Step::Loopback, None, e))?;
        }
        if self.spec.namespaces.uts == NsChoice::New {
            sys.sethostname(&self.spec.hostname).map_err(|e| {
                let mut err = SetupError::new(Step::Hostname, None, e);
                err.detail = Some(self.spec.hostname.clone());
                err
            })?;
        }
        if self.spec.consoles > 0 {
            let console = Path::new("/dev/console");
            sys.setsid()
                .and_then(|()| sys.console_stdio(console))
                .map_err(|e| SetupError::new(Step::ConsoleStdio, Some(console), e))?;
        }
        let pending = self.identity_and_capabilities(filter.as_deref())?;
        if let Some(security) = &self.spec.security {
            sys.write_file(
                Path::new("/proc/thread-self/attr/exec"),
                security.process_label.as_bytes(),
            )
            .map_err(|e| {
                let mut err = SetupError::new(Step::SecurityLabel, None, e);
                err.detail = Some(security.process_label.clone());
                err
            })?;
        }
        sys.umask(umask);
        let init = &self.spec.init;
        sys.chdir(&init.cwd)
            .map_err(|e| SetupError::new(Step::Chdir, Some(&init.cwd), e))?;
        // The error pipe is close-on-exec already; everything else the
        // monitor had open must not reach init.
        sys.cloexec_from(3)
            .map_err(|e| SetupError::new(Step::Exec, Some(&init.path), e))?;
        if let Some(program) = pending {
            self.install_seccomp(program)?;
        }
        let errno = sys.execve(&init.path, &init.args, &init.env);
        Err(SetupError::new(Step::Exec, Some(&init.path), errno))
    }

    /// Every mount of the container, then its root made the process's.
    fn mount_all(&self) -> Result<(), SetupError> {
        self.sys
            .mount(
                None,
                Path::new("/"),
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )
            .map_err(|e| SetupError::new(Step::MakePrivate, Some(Path::new("/")), e))?;

        self.mount_root()?;
        self.mount_proc()?;
        self.mount_sys()?;
        self.mount_dev()?;
        for mount in &self.spec.mounts {
            self.mount_one(mount)?;
        }
        // Last, so that no mount above can undo them.
        for path in &self.spec.readonly_paths {
            self.readonly_path(path)?;
        }
        for path in &self.spec.masked_paths {
            self.mask_path(path)?;
        }
        self.switch_root()
    }

    /// Join the container's user namespace and leave every mount made so
    /// far in a mount namespace it does not own: the copy the kernel makes
    /// for the new one marks each mount locked (it cannot be unmounted to
    /// reveal what it covers) and locks its read-only, nosuid, nodev and
    /// noexec flags, so root inside cannot undo masks and read-only paths.
    fn enter_user_namespace(&self) -> Result<(), SetupError> {
        let sys = self.sys;
        let userns = self
            .userns
            .ok_or_else(|| SetupError::new(Step::UserNamespace, None, Errno::EBADF))?;
        sys.setns(userns, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| SetupError::new(Step::UserNamespace, None, e))?;
        self.hold_mount_namespace();
        sys.unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| SetupError::new(Step::LockMounts, None, e))
    }

    /// Keeps the mount namespace about to be left until the mounter exits
    /// (see `left`). Without the descriptor it is torn down on leaving:
    /// slower, not wrong.
    fn hold_mount_namespace(&self) {
        if let Ok(held) = self.sys.hold_mount_namespace() {
            self.left.borrow_mut().push(held);
        }
    }

    /// The user namespace and its mapping when the root is shown through
    /// an idmapped mount.
    fn idmapped_root(&self) -> Option<BorrowedFd<'a>> {
        match &self.spec.namespaces.user {
            Some(map) if map.idmapped_root => self.userns,
            _ => None,
        }
    }

    /// The host uid and gid of root inside, in a user namespace that maps
    /// root.
    fn mapped_root(&self) -> Option<(u32, u32)> {
        let map = self.spec.namespaces.user.as_ref()?;
        Some((map.root_uid()?, map.root_gid()?))
    }

    /// Mount options for a tmpfs root inside can write to: `uid=`/`gid=`
    /// of the container's root on the host, in a user namespace.
    fn owned_by_root(&self, base: &str) -> String {
        match self.mapped_root() {
            Some((uid, gid)) => self.options(&format!("{base},uid={uid},gid={gid}")),
            None => self.options(base),
        }
    }

    /// `context="LABEL"` for mount options, when a label applies.
    fn context_option(&self) -> Option<String> {
        self.spec
            .security
            .as_ref()
            .map(|s| format!("context=\"{}\"", s.image_label))
    }

    /// Mount options with the context appended when one applies.
    fn options(&self, base: &str) -> String {
        match (base.is_empty(), self.context_option()) {
            (_, None) => base.to_string(),
            (true, Some(ctx)) => ctx,
            (false, Some(ctx)) => format!("{base},{ctx}"),
        }
    }

    /// The host path of `inside` (absolute, inside the container) under
    /// the staging root, resolved so that symlinks cannot leave the root;
    /// missing components are created (the last as `create`).
    fn ensure(&self, inside: &Path, create: Create) -> Result<PathBuf, Errno> {
        let components: Vec<&std::ffi::OsStr> = inside
            .components()
            .map(|c| match c {
                Component::RootDir => Ok(None),
                Component::CurDir => Ok(None),
                Component::Normal(name) => Ok(Some(name)),
                Component::ParentDir | Component::Prefix(_) => Err(Errno::EINVAL),
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?;
        if !inside.is_absolute() {
            return Err(Errno::EINVAL);
        }
        let prefix = |n: usize| -> PathBuf {
            let mut p = PathBuf::from("/");
            p.extend(&components[..n]);
            p
        };
        match self.sys.resolve_in_root(&self.root, inside) {
            Ok(host) => return Ok(host),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // The deepest existing ancestor ("/" always exists).
        let mut base = self.root.clone();
        let mut existing = 0;
        for n in (0..components.len()).rev() {
            match self.sys.resolve_in_root(&self.root, &prefix(n)) {
                Ok(host) => {
                    base = host;
                    existing = n;
                    break;
                }
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e),
            }
        }
        for i in existing..components.len() {
            let path = base.join(components[i]);
            let last = i + 1 == components.len();
            let made = if last && create == Create::File {
                self.sys.create_file(&path, 0o644)
            } else {
                self.sys.mkdir(&path, 0o755)
            };
            base = match made {
                Ok(()) => path,
                // Something appeared there, or a dangling symlink: resolve
                // it again, inside the root.
                Err(Errno::EEXIST) => self.sys.resolve_in_root(&self.root, &prefix(i + 1))?,
                Err(e) => return Err(e),
            };
        }
        Ok(base)
    }

    fn mount_root(&self) -> Result<(), SetupError> {
        let sys = self.sys;
        let root = &self.root;
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        match &self.spec.root {
            RootFs::Host => {
                let host = Path::new("/");
                sys.mount(Some(host), root, None, bind, None)
                    .map_err(|e| SetupError::new(Step::RootFs, Some(host), e))?;
            }
            RootFs::Dir { path, readonly } => {
                match self.idmapped_root() {
                    Some(userns) => sys
                        .idmap_bind(path, root, userns, true)
                        .map_err(|e| SetupError::new(Step::IdmapRoot, Some(path), e))?,
                    None => sys
                        .mount(Some(path), root, None, bind, None)
                        .map_err(|e| SetupError::new(Step::RootFs, Some(path), e))?,
                }
                if *readonly {
                    sys.set_readonly(root, true)
                        .map_err(|e| SetupError::new(Step::RootFs, Some(path), e))?;
                }
            }
            RootFs::Block { dev, readonly } => {
                self.mount_filesystem(dev, root, *readonly)
                    .map_err(|e| SetupError::new(Step::RootFs, Some(dev), e))?;
                self.idmap_in_place(root, dev)?;
            }
            RootFs::File { path, readonly } => {
                let device = self.loop_device(path, *readonly)?;
                self.mount_filesystem(&device.path, root, *readonly)
                    .map_err(|e| SetupError::new(Step::RootFs, Some(path), e))?;
                // The mount holds the device now; autoclear detaches it
                // when the mount goes away.
                drop(device);
                self.idmap_in_place(root, path)?;
            }
            RootFs::Overlay {
                lowerdir,
                upperdir,
                workdir,
            } => {
                self.mount_overlay(lowerdir, upperdir, workdir)?;
            }
        }
        Ok(())
    }

    /// Mounts an image's layers under the domain's writable layer on the
    /// staging root, labelled with the container's file context. The one
    /// place the overlay root is mounted.
    ///
    /// With an allocated id range the image's layers (owned by host root)
    /// are shown through idmapped mounts: overlayfs itself cannot be
    /// idmapped, its layers can. They sit in a scratch tmpfs on the staging
    /// root that the overlay then covers, so they go with the mount
    /// namespace. The writable layer is not idmapped (overlayfs would
    /// create its work files as host root through it and fail), so it
    /// holds the container's files in its host ids; commit maps them back.
    fn mount_overlay(
        &self,
        lowerdir: &[PathBuf],
        upperdir: &Path,
        workdir: &Path,
    ) -> Result<(), SetupError> {
        let failed = |e| SetupError::new(Step::RootFs, Some(upperdir), e);
        let lowerdir = match self.idmapped_root() {
            None => lowerdir.to_vec(),
            Some(userns) => {
                self.sys
                    .mount(
                        Some(Path::new("tmpfs")),
                        &self.root,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        Some("mode=700,size=64k"),
                    )
                    .map_err(failed)?;
                let mut mapped = Vec::with_capacity(lowerdir.len());
                for (n, layer) in lowerdir.iter().enumerate() {
                    let at = self.root.join(n.to_string());
                    self.sys.mkdir(&at, 0o700).map_err(failed)?;
                    self.sys
                        .idmap_bind(layer, &at, userns, false)
                        .map_err(|e| SetupError::new(Step::IdmapRoot, Some(layer), e))?;
                    mapped.push(at);
                }
                // Root inside owns the top of its writable layer.
                if let Some((uid, gid)) = self.mapped_root() {
                    self.sys.ensure_owner(upperdir, uid, gid).map_err(failed)?;
                }
                mapped
            }
        };
        let layers = OverlayMount {
            lowerdir,
            upperdir: upperdir.to_owned(),
            workdir: workdir.to_owned(),
            target: self.root.clone(),
        };
        let data = self.options(&layers.options(None));
        self.sys
            .mount(
                Some(Path::new("overlay")),
                &self.root,
                Some("overlay"),
                MsFlags::empty(),
                Some(&data),
            )
            .map_err(failed)
    }

    /// Cover the mount at `target` with an idmapped copy of itself when the
    /// root is idmapped (the copy is what the container sees; the original
    /// stays locked beneath it).
    fn idmap_in_place(&self, target: &Path, source: &Path) -> Result<(), SetupError> {
        match self.idmapped_root() {
            Some(userns) => self
                .sys
                .idmap_bind(target, target, userns, false)
                .map_err(|e| SetupError::new(Step::IdmapRoot, Some(source), e)),
            None => Ok(()),
        }
    }

    /// The block filesystem types to try, preferred ones first.
    fn block_types(&self) -> &[String] {
        self.block_types.get_or_init(|| {
            let known = self
                .sys
                .read_file(Path::new("/proc/filesystems"))
                .unwrap_or_default();
            let known = String::from_utf8_lossy(&known);
            let block: Vec<&str> = known
                .lines()
                .filter(|l| !l.starts_with("nodev"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let mut types: Vec<String> = PREFERRED_FS
                .iter()
                .filter(|t| block.is_empty() || block.contains(t))
                .map(|t| t.to_string())
                .collect();
            types.extend(
                block
                    .iter()
                    .filter(|t| !PREFERRED_FS.contains(t))
                    .map(|t| t.to_string()),
            );
            types
        })
    }

    /// Mount the filesystem on `device` at `target`, trying the known
    /// types until one recognises it.
    fn mount_filesystem(&self, device: &Path, target: &Path, readonly: bool) -> Result<(), Errno> {
        let mut flags = MsFlags::empty();
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        let data = self.context_option();
        let mut last = Errno::EINVAL;
        for fstype in self.block_types() {
            match self
                .sys
                .mount(Some(device), target, Some(fstype), flags, data.as_deref())
            {
                Ok(()) => return Ok(()),
                // Not this type.
                Err(e @ (Errno::EINVAL | Errno::ENODEV | Errno::ENOTBLK)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn mount_proc(&self) -> Result<(), SetupError> {
        let inside = Path::new("/proc");
        let target = self
            .ensure(inside, Create::Dir)
            .map_err(|e| SetupError::new(Step::Proc, Some(inside), e))?;
        self.sys
            .mount(
                Some(Path::new("proc")),
                &target,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None,
            )
            .map_err(|e| SetupError::new(Step::Proc, Some(inside), e))
    }

    fn mount_sys(&self) -> Result<(), SetupError> {
        let inside = Path::new("/sys");
        let err = |e| SetupError::new(Step::Sys, Some(inside), e);
        let target = self.ensure(inside, Create::Dir).map_err(err)?;
        if self.spec.namespaces.net == NsChoice::New {
            // A fresh sysfs shows the container's own network devices.
            self.sys
                .mount(
                    Some(Path::new("sysfs")),
                    &target,
                    Some("sysfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    None,
                )
                .map_err(err)
        } else {
            // Without its own network namespace a container may not mount
            // sysfs (inside a user namespace): show the host's, read-only.
            self.sys
                .mount(
                    Some(Path::new("/sys")),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .and_then(|()| self.sys.set_readonly(&target, true))
                .map_err(err)
        }
    }

    /// A device node at `path` (a host path under the new /dev). Made by
    /// host root in a tmpfs of the host's user namespace, so it works
    /// inside a user namespace too.
    fn device_node(
        &self,
        path: &Path,
        kind: NodeKind,
        mode: u32,
        (major, minor): (u32, u32),
    ) -> Result<(), Errno> {
        self.sys.mknod(path, kind, mode, major, minor)?;
        // Root inside owns its nodes, as it would have made them.
        match self.mapped_root() {
            Some((uid, gid)) => self.sys.chown(path, uid, gid),
            None => Ok(()),
        }
    }

    fn mount_dev(&self) -> Result<(), SetupError> {
        let sys = self.sys;
        let inside = Path::new("/dev");
        let dev = self
            .ensure(inside, Create::Dir)
            .map_err(|e| SetupError::new(Step::Dev, Some(inside), e))?;
        let err_at = |step: Step, name: &str| {
            let path = inside.join(name);
            move |e| SetupError::new(step, Some(&path), e)
        };
        sys.mount(
            Some(Path::new("devfs")),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some(&self.owned_by_root("mode=755")),
        )
        .map_err(|e| SetupError::new(Step::Dev, Some(inside), e))?;

        // A fresh tmpfs: plain joins below cannot meet a symlink.
        for (name, major, minor) in BASIC_NODES {
            self.device_node(&dev.join(name), NodeKind::Char, 0o666, (major, minor))
                .map_err(err_at(Step::DeviceNode, name))?;
        }
        for node in &self.spec.devices {
            let err = |e| SetupError::new(Step::DeviceNode, Some(&node.path), e);
            let parent = node.path.parent().unwrap_or(Path::new("/"));
            let name = node.path.file_name().ok_or_else(|| err(Errno::EINVAL))?;
            let dir = self.ensure(parent, Create::Dir).map_err(err)?;
            let kind = match node.kind {
                DeviceKind::Char => NodeKind::Char,
                DeviceKind::Block => NodeKind::Block,
            };
            self.device_node(&dir.join(name), kind, node.mode, (node.major, node.minor))
                .map_err(err)?;
        }

        let pts = dev.join("pts");
        sys.mkdir(&pts, 0o755)
            .map_err(err_at(Step::Devpts, "pts"))?;
        // Taken before devpts covers it; a kernel that cannot leaves the
        // masks to a tmpfs.
        *self.empty_dir.borrow_mut() = sys.detach_readonly(&pts).ok();
        let mut options = String::from("newinstance,ptmxmode=0666,mode=0620");
        // devpts takes the host's gid of the container's tty group (the
        // mount is made from the host's user namespace).
        if let Some(gid) = self.host_tty_gid() {
            options.push_str(&format!(",gid={gid}"));
        }
        sys.mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(&self.options(&options)),
        )
        .map_err(err_at(Step::Devpts, "pts"))?;
        // Root inside owns its devpts, as if it had mounted it.
        if let Some((uid, gid)) = self.mapped_root() {
            sys.chown(&pts, uid, gid)
                .and_then(|()| sys.chown(&pts.join("ptmx"), uid, gid))
                .map_err(err_at(Step::Devpts, "pts"))?;
        }
        sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))
            .map_err(err_at(Step::Dev, "ptmx"))?;

        // A directory of /dev's tmpfs rather than a tmpfs of its own: one
        // superblock less per container (see `first_mask`). Its pages are
        // charged to the container's memory cgroup as before.
        let shm = dev.join("shm");
        sys.mkdir(&shm, 0o1777)
            .and_then(|()| match self.mapped_root() {
                Some((uid, gid)) => sys.chown(&shm, uid, gid),
                None => Ok(()),
            })
            .map_err(err_at(Step::Dev, "shm"))?;

        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            sys.symlink(Path::new(target), &dev.join(name))
                .map_err(err_at(Step::Dev, name))?;
        }

        // The consoles are ptys of the container's own devpts instance (as
        // a login inside would open): they count against its limits, not
        // the host's instance and the ptys it keeps in reserve.
        for n in 0..self.spec.consoles {
            let name = if n == 0 {
                "console".to_string()
            } else {
                format!("tty{n}")
            };
            let path = dev.join(&name);
            let (master, number) = sys
                .open_pty(&pts.join("ptmx"))
                .map_err(err_at(Step::Console, &name))?;
            let slave = pts.join(number.to_string());
            // Made by host root: root inside owns it, as its login would.
            if let Some((uid, gid)) = self.mapped_root() {
                sys.chown(&slave, uid, gid)
                    .map_err(err_at(Step::Console, &name))?;
            }
            sys.create_file(&path, 0o600)
                .and_then(|()| sys.mount(Some(&slave), &path, None, MsFlags::MS_BIND, None))
                .map_err(err_at(Step::Console, &name))?;
            self.consoles.borrow_mut().push(master);
        }
        Ok(())
    }

    /// The host gid of the container's tty group (5), if it is mapped.
    fn host_tty_gid(&self) -> Option<u32> {
        match &self.spec.namespaces.user {
            None => Some(5),
            Some(map) => map.host_gid(5),
        }
    }

    fn mount_one(&self, mount: &MountSpec) -> Result<(), SetupError> {
        let sys = self.sys;
        let target = &mount.target;
        let err = |e| SetupError::new(Step::Mount, Some(target), e);
        let bind = |source: &Path| -> Result<(), SetupError> {
            let create = match sys.file_kind(source).map_err(err)? {
                FileKind::Dir => Create::Dir,
                _ => Create::File,
            };
            let host = self.ensure(target, create).map_err(err)?;
            sys.mount(
                Some(source),
                &host,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(err)?;
            if mount.readonly {
                sys.set_readonly(&host, true).map_err(err)?;
            }
            Ok(())
        };
        let mut ro = MsFlags::empty();
        if mount.readonly {
            ro |= MsFlags::MS_RDONLY;
        }
        match &mount.source {
            MountSource::HostDir(source) => bind(source),
            MountSource::ContainerDir(source) => {
                let host = sys
                    .resolve_in_root(&self.root, source)
                    .map_err(|e| SetupError::new(Step::Mount, Some(source), e))?;
                bind(&host)
            }
            MountSource::Tmpfs { size } => {
                let host = self.ensure(target, Create::Dir).map_err(err)?;
                sys.mount(
                    Some(Path::new("tmpfs")),
                    &host,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | ro,
                    Some(&self.owned_by_root(&format!("size={size}"))),
                )
                .map_err(err)
            }
            MountSource::Block(device) => {
                let host = self.ensure(target, Create::Dir).map_err(err)?;
                self.mount_filesystem(device, &host, mount.readonly)
                    .map_err(err)
            }
            MountSource::File(file) => {
                let host = self.ensure(target, Create::Dir).map_err(err)?;
                let device = self.loop_device(file, mount.readonly)?;
                self.mount_filesystem(&device.path, &host, mount.readonly)
                    .map_err(err)?;
                drop(device);
                Ok(())
            }
        }
    }

    /// The loop device for a raw image file: the one the monitor attached
    /// (the allow-list names it), else one attached here.
    fn loop_device(
        &self,
        file: &Path,
        readonly: bool,
    ) -> Result<crate::sys::LoopDevice, SetupError> {
        if let Some(attached) = self.spec.loop_devices.iter().find(|l| l.file == file) {
            return Ok(crate::sys::LoopDevice {
                path: attached.device.clone(),
                fd: None,
            });
        }
        self.sys
            .loop_attach(file, readonly)
            .map_err(|e| SetupError::new(Step::LoopDevice, Some(file), e))
    }

    /// Bind `inside` onto itself and make it read-only; skipped when the
    /// path does not exist.
    fn readonly_path(&self, inside: &Path) -> Result<(), SetupError> {
        let err = |e| SetupError::new(Step::ReadonlyPath, Some(inside), e);
        let host = match self.sys.resolve_in_root(&self.root, inside) {
            Ok(host) => host,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        self.sys
            .mount(
                Some(&host),
                &host,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .and_then(|()| self.sys.set_readonly(&host, true))
            .map_err(err)
    }

    /// Hide `inside`: /dev/null over a file, an empty read-only directory
    /// over a directory (one mount for all of them, see `empty_dir`);
    /// skipped when the path does not exist.
    fn mask_path(&self, inside: &Path) -> Result<(), SetupError> {
        let err = |e| SetupError::new(Step::MaskPath, Some(inside), e);
        let host = match self.sys.resolve_in_root(&self.root, inside) {
            Ok(host) => host,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(err(e)),
        };
        match self.sys.file_kind(&host) {
            Ok(FileKind::Dir) => {
                let first = self.first_mask.borrow().clone();
                match first {
                    Some(first) => {
                        self.sys
                            .mount(Some(&first), &host, None, MsFlags::MS_BIND, None)
                    }
                    None if let Some(empty) = self.empty_dir.take() => self
                        .sys
                        .attach_tree(empty.as_fd(), &host)
                        .map(|()| *self.first_mask.borrow_mut() = Some(host.clone())),
                    None => self
                        .sys
                        .mount(
                            Some(Path::new("tmpfs")),
                            &host,
                            Some("tmpfs"),
                            MsFlags::MS_RDONLY
                                | MsFlags::MS_NOSUID
                                | MsFlags::MS_NODEV
                                | MsFlags::MS_NOEXEC,
                            Some(&self.options("mode=555,size=4k")),
                        )
                        .map(|()| *self.first_mask.borrow_mut() = Some(host.clone())),
                }
            }
            Ok(_) => self.sys.mount(
                Some(Path::new("/dev/null")),
                &host,
                None,
                MsFlags::MS_BIND,
                None,
            ),
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => Err(e),
        }
        .map_err(err)
    }

    /// Make the staging root the process's root. With a template, a copy
    /// of the template with the root stacked on its `/` (see
    /// `stack_on_template`); else pivot_root(".", "."), which stacks the
    /// old root on the new one, so no put_old directory is needed (the
    /// root may be read-only), then the old root is detached.
    fn switch_root(&self) -> Result<(), SetupError> {
        if let Some(template) = self.template {
            return self
                .stack_on_template(template)
                .map_err(|e| SetupError::new(Step::PivotRoot, Some(&self.root), e));
        }
        let sys = self.sys;
        let dot = Path::new(".");
        sys.chdir(&self.root)
            .and_then(|()| sys.pivot_root(dot, dot))
            .and_then(|()| sys.umount2(dot, MntFlags::MNT_DETACH))
            .and_then(|()| sys.chdir(Path::new("/")))
            .map_err(|e| SetupError::new(Step::PivotRoot, Some(&self.root), e))
    }

    /// The root without pivot_root, which visits every task on the host
    /// (milliseconds with thousands of containers running): the staging
    /// tree is cloned detached, the template joined and copied (one mount
    /// copied, not the host's table), the tree moved onto the copy's `/`
    /// and made the root. A path that climbs to the template's root is
    /// turned onto the mount stacked on it, so `..` from the root, or out
    /// of a chroot below it, lands on the container's root again; and the
    /// root counts as the namespace's (no chroot), so nested user
    /// namespaces can be made inside.
    fn stack_on_template(&self, template: BorrowedFd<'_>) -> Result<(), Errno> {
        let sys = self.sys;
        let tree = sys.clone_tree(&self.root)?;
        self.hold_mount_namespace();
        sys.setns(template, CloneFlags::CLONE_NEWNS)?;
        sys.unshare(CloneFlags::CLONE_NEWNS)?;
        sys.attach_tree(tree.as_fd(), Path::new("/"))?;
        // `/` still names the template's root under the tree: the tree's
        // own descriptor names its root.
        sys.fchdir(tree.as_fd())?;
        sys.chroot(Path::new("."))?;
        sys.chdir(Path::new("/"))
    }

    /// Look `spec` up in a passwd- or group-format file of the container:
    /// (id, primary gid for passwd). libvirt's rule: a name that is not
    /// found but is all digits is used as a number.
    fn lookup(&self, file: &str, spec: &IdSpec) -> Result<(u32, Option<u32>), String> {
        let name = match spec {
            IdSpec::Id(id) => return Ok((*id, None)),
            IdSpec::Name(name) => name,
        };
        let contents = self.sys.read_file(Path::new(file)).unwrap_or_default();
        let contents = String::from_utf8_lossy(&contents);
        for line in contents.lines() {
            let mut fields = line.split(':');
            if fields.next() != Some(name.as_str()) {
                continue;
            }
            let id = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            let gid = fields.next().and_then(|f| f.parse::<u32>().ok());
            if let Some(id) = id {
                return Ok((id, gid));
            }
        }
        if !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_digit())
            && let Ok(id) = name.parse()
        {
            return Ok((id, None));
        }
        Err(format!("'{name}' is not in the container's {file}"))
    }

    /// The compiled filter, when the spec asks for one.
    fn seccomp_program(
        &self,
    ) -> Result<Option<std::borrow::Cow<'static, [SockFilter]>>, SetupError> {
        let Some(seccomp) = &self.spec.seccomp else {
            return Ok(None);
        };
        Policy::new(seccomp.deny_mount, &seccomp.deny)
            .and_then(|policy| policy.program())
            .map(Some)
            .map_err(|e| SetupError::detail(Step::Seccomp, e.to_string()))
    }

    fn install_seccomp(&self, program: &[SockFilter]) -> Result<(), SetupError> {
        self.sys
            .install_seccomp(program)
            .map_err(|e| SetupError::new(Step::Seccomp, None, e))
    }

    /// Init's user, groups, capabilities and `no_new_privs`; the seccomp
    /// `filter` goes in here when the switch would take away the right to
    /// install it (see [`placement`]). Returns the filter when it is
    /// still to be installed, last.
    fn identity_and_capabilities<'f>(
        &self,
        filter: Option<&'f [SockFilter]>,
    ) -> Result<Option<&'f [SockFilter]>, SetupError> {
        let sys = self.sys;
        let init = &self.spec.init;
        let (uid, primary_gid) = match &init.user {
            None => (0, None),
            Some(user) => self
                .lookup("/etc/passwd", user)
                .map_err(|m| SetupError::detail(Step::InitUser, format!("init user {m}")))?,
        };
        let gid = match &init.group {
            Some(group) => {
                self.lookup("/etc/group", group)
                    .map_err(|m| SetupError::detail(Step::InitGroup, format!("init group {m}")))?
                    .0
            }
            None => primary_gid.unwrap_or(0),
        };

        let caps_err = |e| SetupError::new(Step::Capabilities, None, e);
        let last_cap = sys
            .read_file(Path::new("/proc/sys/kernel/cap_last_cap"))
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u8>().ok())
            .unwrap_or(40)
            .min(63);
        let mut keep: u64 = 0;
        for &cap in &self.spec.capabilities {
            if cap <= last_cap {
                keep |= 1 << cap;
            }
        }
        for cap in 0..=last_cap {
            if keep & (1 << cap) == 0 {
                sys.cap_bounding_drop(cap).map_err(caps_err)?;
            }
        }
        sys.cap_ambient_clear().map_err(caps_err)?;

        let mut pending = filter;
        if let Some(program) = filter
            && placement(self.spec.no_new_privs, uid, keep) == Placement::BeforeIdentity
        {
            self.install_seccomp(program)?;
            pending = None;
        }
        sys.setgroups(&[])
            .and_then(|()| sys.setresgid(gid))
            .and_then(|()| sys.setresuid(uid))
            .map_err(|e| {
                let mut err = SetupError::new(Step::SetIds, None, e);
                err.detail = Some(format!("uid {uid}, gid {gid}"));
                err
            })?;
        // A non-root init lost its capabilities with setresuid; a root
        // init keeps the kept set, less what the monitor itself lacks.
        if uid == 0 {
            let keep = keep & sys.cap_permitted().map_err(caps_err)?;
            sys.capset(keep, keep, keep).map_err(caps_err)?;
        }
        if self.spec.no_new_privs {
            sys.set_no_new_privs()
                .map_err(|e| SetupError::new(Step::NoNewPrivs, None, e))?;
        }
        Ok(pending)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cgroup::CgroupSpec;
    use crate::lxc::spec::{
        DeviceNode, IdMapping, InitSpec, Namespaces, SPEC_VERSION, SeccompSpec, SecuritySpec,
    };
    use crate::sys::recorder::Recorder;

    const ROOT: &str = "/run/lxvirt/web.root";

    fn spec() -> ContainerSpec {
        ContainerSpec {
            version: SPEC_VERSION,
            name: "web".into(),
            uuid: uuid::Uuid::nil(),
            hostname: "web".into(),
            namespaces: Namespaces {
                net: NsChoice::New,
                ipc: NsChoice::New,
                uts: NsChoice::New,
                user: None,
            },
            root: RootFs::Dir {
                path: "/srv/web".into(),
                readonly: false,
            },
            mounts: vec![],
            devices: vec![],
            init: InitSpec {
                path: "/sbin/init".into(),
                args: vec!["/sbin/init".into()],
                env: vec!["PATH=/bin:/sbin".into()],
                cwd: "/".into(),
                user: None,
                group: None,
            },
            capabilities: vec![0, 21],
            no_new_privs: false,
            masked_paths: vec![],
            readonly_paths: vec![],
            consoles: 1,
            cgroup: CgroupSpec::default(),
            security: None,
            seccomp: None,
            run_dir: "/run/lxvirt".into(),
            interfaces: vec![],
            host_interfaces: vec![],
            loop_devices: vec![],
            console_log: None,
        }
    }

    fn userns() -> IdMapping {
        IdMapping {
            uid: vec![(0, 100000, 65536)],
            gid: vec![(0, 100000, 65536)],
            idmapped_root: false,
        }
    }

    /// Run the setup against the double; the double's execve "fails" with
    /// an unknown errno, which is the end of a complete run.
    fn run(sys: &Recorder, spec: &ContainerSpec) -> SetupError {
        // Any descriptor stands for the mount namespace and the console
        // sink: the double uses neither.
        let any = std::fs::File::open("/dev/null").unwrap();
        match Setup::new(sys, spec)
            .with_mounts(std::os::fd::AsFd::as_fd(&any))
            .with_console_sink(std::os::fd::AsFd::as_fd(&any))
            .run()
        {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    /// The mounter's part, for a spec with a user namespace.
    fn make_mounts(sys: &Recorder, spec: &ContainerSpec) -> Result<(), SetupError> {
        let userns = std::fs::File::open("/dev/null").unwrap();
        Setup::new(sys, spec)
            .with_userns(std::os::fd::AsFd::as_fd(&userns))
            .make_mounts()
    }

    fn run_ok(sys: &Recorder, spec: &ContainerSpec) {
        let err = run(sys, spec);
        assert_eq!(err.step, Step::Exec, "{err}\n{:#?}", sys.calls());
        assert_eq!(err.errno(), None, "the double's execve returns no errno");
    }

    fn exact(sys: &Recorder, line: &str) -> bool {
        sys.calls().iter().any(|c| c == line)
    }

    fn before(sys: &Recorder, a: &str, b: &str) {
        let pa = sys
            .position(a)
            .unwrap_or_else(|| panic!("no {a}: {:#?}", sys.calls()));
        let pb = sys
            .position(b)
            .unwrap_or_else(|| panic!("no {b}: {:#?}", sys.calls()));
        assert!(pa < pb, "{a} should come before {b}: {:#?}", sys.calls());
    }

    #[test]
    fn dir_root_without_user_namespace() {
        let sys = Recorder::new().file("/proc/sys/kernel/cap_last_cap", "40\n");
        let mut spec = spec();
        spec.consoles = 2;
        run_ok(&sys, &spec);
        let calls = sys.calls();
        assert_eq!(calls[0], "reset_signals");
        before(
            &sys,
            "mount - / type=- flags=MS_REC|MS_PRIVATE",
            "unshare CLONE_NEWCGROUP",
        );
        assert!(
            sys.position("setresuid").unwrap() > sys.position("pivot_root").unwrap(),
            "no early setresuid without a user namespace"
        );
        before(
            &sys,
            "mount - / type=- flags=MS_REC|MS_PRIVATE",
            &format!("mount /srv/web {ROOT} type=- flags=MS_BIND|MS_REC"),
        );
        assert!(!sys.has(&format!("readonly {ROOT} ")));
        assert!(sys.has(&format!(
            "mount proc {ROOT}/proc type=proc flags=MS_NOSUID|MS_NODEV|MS_NOEXEC"
        )));
        assert!(sys.has(&format!(
            "mount sysfs {ROOT}/sys type=sysfs flags=MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC"
        )));
        assert!(sys.has(&format!(
            "mount devfs {ROOT}/dev type=tmpfs flags=MS_NOSUID|MS_STRICTATIME data=mode=755"
        )));
        for (name, node) in [
            ("null", "c 1:3"),
            ("zero", "c 1:5"),
            ("full", "c 1:7"),
            ("random", "c 1:8"),
            ("urandom", "c 1:9"),
            ("tty", "c 5:0"),
        ] {
            assert!(
                exact(&sys, &format!("mknod {ROOT}/dev/{name} {node} 666")),
                "{name}"
            );
        }
        assert!(sys.has(&format!(
            "mount devpts {ROOT}/dev/pts type=devpts flags=MS_NOSUID|MS_NOEXEC data=newinstance,ptmxmode=0666,mode=0620,gid=5"
        )));
        assert!(sys.has(&format!("symlink {ROOT}/dev/ptmx -> pts/ptmx")));
        // /dev/shm is a directory of /dev's tmpfs, not a superblock more.
        assert!(exact(&sys, &format!("mkdir {ROOT}/dev/shm 1777")));
        assert!(!sys.has("/dev/shm type="));
        assert!(sys.has(&format!("symlink {ROOT}/dev/fd -> /proc/self/fd")));
        assert!(sys.has(&format!("symlink {ROOT}/dev/stderr -> /proc/self/fd/2")));
        // The consoles are ptys of the container's own devpts instance,
        // sent to the monitor once the mounts are made, before anything
        // else of the setup.
        before(
            &sys,
            &format!("mount devpts {ROOT}/dev/pts"),
            &format!("open_pty {ROOT}/dev/pts/ptmx -> 0"),
        );
        assert!(exact(
            &sys,
            &format!("mount {ROOT}/dev/pts/0 {ROOT}/dev/console type=- flags=MS_BIND data=-")
        ));
        assert!(exact(
            &sys,
            &format!("mount {ROOT}/dev/pts/1 {ROOT}/dev/tty1 type=- flags=MS_BIND data=-")
        ));
        assert!(!sys.has(&format!("chown {ROOT}/dev/pts/0")));
        before(
            &sys,
            &format!("mount {ROOT}/dev/pts/1"),
            &format!("chdir {ROOT}"),
        );
        before(
            &sys,
            "umount2 . MNT_DETACH",
            "send_fds \"consoles\" with 2 fds",
        );
        before(
            &sys,
            "send_fds \"consoles\" with 2 fds",
            "unshare CLONE_NEWCGROUP",
        );
        before(&sys, &format!("chdir {ROOT}"), "pivot_root . .");
        before(&sys, "pivot_root . .", "umount2 . MNT_DETACH");
        before(&sys, "umount2 . MNT_DETACH", "sethostname web");
        before(&sys, "sethostname web", "setsid");
        before(&sys, "setsid", "console_stdio /dev/console");
        before(&sys, "console_stdio /dev/console", "capbset_drop 1");
        assert!(!exact(&sys, "capbset_drop 0"));
        assert!(!exact(&sys, "capbset_drop 21"));
        assert!(exact(&sys, "capbset_drop 40"));
        assert!(!exact(&sys, "capbset_drop 41"));
        before(&sys, "capbset_drop 40", "ambient_clear");
        before(&sys, "ambient_clear", "setgroups []");
        before(&sys, "setgroups []", "setresgid 0");
        before(
            &sys,
            "setresuid 0",
            "capset e=0x200001 p=0x200001 i=0x200001",
        );
        assert!(!sys.has("no_new_privs"));
        assert!(!sys.has("write /proc/thread-self/attr/exec"));
        let n = calls.len();
        assert_eq!(calls[n - 4], "umask 22");
        assert_eq!(calls[n - 3], "chdir /");
        assert_eq!(calls[n - 2], "cloexec_from 3");
        assert_eq!(
            calls[n - 1],
            "execve /sbin/init [\"/sbin/init\"] env=PATH=/bin:/sbin"
        );
    }

    #[test]
    fn host_root_and_readonly_dir_root() {
        let mut s = spec();
        s.root = RootFs::Host;
        let sys = Recorder::new();
        run_ok(&sys, &s);
        assert!(sys.has(&format!("mount / {ROOT} type=- flags=MS_BIND|MS_REC")));
        assert!(!sys.has(&format!("readonly {ROOT} ")));

        s.root = RootFs::Dir {
            path: "/srv/web".into(),
            readonly: true,
        };
        let sys = Recorder::new();
        run_ok(&sys, &s);
        before(
            &sys,
            &format!("mount /srv/web {ROOT} type=- flags=MS_BIND|MS_REC"),
            &format!("readonly {ROOT} recursive"),
        );
        before(&sys, &format!("readonly {ROOT} recursive"), "mount proc");
    }

    #[test]
    fn user_namespace_is_joined_after_every_mount_and_locks_them() {
        let mut s = spec();
        s.namespaces.user = Some(userns());
        s.readonly_paths = vec!["/proc/sys".into()];
        s.masked_paths = vec!["/proc/kcore".into()];
        s.devices = vec![DeviceNode {
            path: "/dev/disk/data".into(),
            kind: DeviceKind::Block,
            major: 8,
            minor: 16,
            mode: 0o660,
        }];
        let sys = Recorder::new()
            .missing(format!("{ROOT}/dev/disk"))
            .kind(format!("{ROOT}/proc/kcore"), FileKind::File);
        make_mounts(&sys, &s).unwrap();
        // Host root makes the mounts, nodes included (mknod works outside
        // the user namespace), owned by root inside.
        before(&sys, "mount - / type=- flags=MS_REC|MS_PRIVATE", "mknod");
        assert!(sys.has(&format!("chown {ROOT}/dev/null 100000:100000")));
        assert!(sys.has(&format!("chown {ROOT}/dev/disk/data 100000:100000")));
        assert!(sys.has("data=mode=755,uid=100000,gid=100000"));
        assert!(sys.has(&format!("chown {ROOT}/dev/shm 100000:100000")));
        // The tty group's host gid.
        assert!(sys.has("data=newinstance,ptmxmode=0666,mode=0620,gid=100005"));
        // The console, from the container's devpts, owned by root inside;
        // the mounter keeps the master for its report.
        before(
            &sys,
            &format!("open_pty {ROOT}/dev/pts/ptmx -> 0"),
            &format!("chown {ROOT}/dev/pts/0 100000:100000"),
        );
        before(
            &sys,
            &format!("chown {ROOT}/dev/pts/0 100000:100000"),
            &format!("mount {ROOT}/dev/pts/0 {ROOT}/dev/console"),
        );
        assert!(!sys.has("send_fds"));
        // Then the user namespace, and a mount namespace it owns: the
        // kernel locks every mount made before.
        before(&sys, &format!("readonly {ROOT}/proc/sys"), "pivot_root");
        before(
            &sys,
            &format!("mount /dev/null {ROOT}/proc/kcore"),
            "pivot_root",
        );
        before(&sys, "pivot_root", "setns CLONE_NEWUSER");
        before(&sys, "setns CLONE_NEWUSER", "unshare CLONE_NEWNS");
        assert!(!sys.has("execve"));

        // Init, already in the user namespace, joins that mount namespace
        // and mounts nothing itself.
        let sys = Recorder::new();
        run_ok(&sys, &s);
        assert!(!sys.has("mount "), "{:#?}", sys.calls());
        assert!(!sys.has("open_pty") && !sys.has("send_fds"));
        before(&sys, "setresgid 0", "setresuid 0");
        before(&sys, "setresuid 0", "setns CLONE_NEWNS");
        // The cgroup namespace is owned by the user namespace.
        before(&sys, "setns CLONE_NEWNS", "unshare CLONE_NEWCGROUP");
        before(&sys, "unshare CLONE_NEWCGROUP", "sethostname");
    }

    #[test]
    fn with_a_template_the_root_is_stacked_on_its_copy_instead_of_pivoted_into() {
        let mut s = spec();
        s.namespaces.user = Some(userns());
        s.masked_paths = vec!["/proc/kcore".into()];
        let sys = Recorder::new().kind(format!("{ROOT}/proc/kcore"), FileKind::File);
        let userns = std::fs::File::open("/dev/null").unwrap();
        let template = std::fs::File::open("/dev/null").unwrap();
        Setup::new(&sys, &s)
            .with_userns(std::os::fd::AsFd::as_fd(&userns))
            .with_template(std::os::fd::AsFd::as_fd(&template))
            .make_mounts()
            .unwrap();
        let calls = sys.calls();
        let from = calls
            .iter()
            .position(|c| c == &format!("clone_tree {ROOT}"))
            .unwrap_or_else(|| panic!("{calls:#?}"));
        // Every mount is made in the first namespace and cloned with the
        // tree; the first namespace is held, not torn down on leaving it.
        before(
            &sys,
            &format!("mount /dev/null {ROOT}/proc/kcore"),
            "clone_tree",
        );
        assert_eq!(
            calls[from..],
            [
                format!("clone_tree {ROOT}"),
                "hold_mount_namespace".into(),
                "setns CLONE_NEWNS".into(),
                "unshare CLONE_NEWNS".into(),
                "attach_tree /".into(),
                "fchdir".into(),
                "chroot .".into(),
                "chdir /".into(),
                // Then locked as without a template, the copy held too.
                "setns CLONE_NEWUSER".into(),
                "hold_mount_namespace".into(),
                "unshare CLONE_NEWNS".into(),
            ],
        );
        assert!(!sys.has("pivot_root"));
    }

    #[test]
    fn a_failing_template_step_names_the_root() {
        let mut s = spec();
        s.namespaces.user = Some(userns());
        let sys = Recorder::new().fail("attach_tree", Errno::EPERM);
        let userns = std::fs::File::open("/dev/null").unwrap();
        let template = std::fs::File::open("/dev/null").unwrap();
        let error = Setup::new(&sys, &s)
            .with_userns(std::os::fd::AsFd::as_fd(&userns))
            .with_template(std::os::fd::AsFd::as_fd(&template))
            .make_mounts()
            .unwrap_err();
        assert_eq!(error.step, Step::PivotRoot);
        assert_eq!(error.errno(), Some(Errno::EPERM));
        assert!(error.to_string().contains(ROOT), "{error}");
        assert!(!sys.has("setns CLONE_NEWUSER"));
    }

    #[test]
    fn without_a_user_namespace_nothing_is_joined() {
        let s = spec();
        let sys = Recorder::new();
        run_ok(&sys, &s);
        assert!(!sys.has("setns"), "{:#?}", sys.calls());
        assert!(!sys.has("unshare CLONE_NEWNS"));
        assert!(!sys.has("chown"));
        assert!(sys.has("data=newinstance,ptmxmode=0666,mode=0620,gid=5"));
        before(&sys, "pivot_root", "unshare CLONE_NEWCGROUP");
    }

    #[test]
    fn allocated_ranges_show_the_root_through_an_idmapped_mount() {
        let mut s = spec();
        s.namespaces.user = Some(IdMapping {
            idmapped_root: true,
            ..userns()
        });
        let sys = Recorder::new();
        make_mounts(&sys, &s).unwrap();
        assert!(sys.has(&format!("idmap_bind /srv/web {ROOT} recursive")));
        assert!(!sys.has(&format!("mount /srv/web {ROOT}")));
        before(&sys, "idmap_bind", "pivot_root");

        // A block root is mounted, then covered by its idmapped copy.
        s.root = RootFs::Block {
            dev: "/dev/vdb".into(),
            readonly: false,
        };
        let sys = Recorder::new();
        make_mounts(&sys, &s).unwrap();
        before(
            &sys,
            &format!("mount /dev/vdb {ROOT} type=ext4"),
            &format!("idmap_bind {ROOT} {ROOT} single"),
        );

        // The host's root is never idmapped: root inside must not gain
        // write access to the host's files.
        s.root = RootFs::Host;
        let sys = Recorder::new();
        make_mounts(&sys, &s).unwrap();
        assert!(!sys.has("idmap_bind"), "{:#?}", sys.calls());

        // A filesystem without idmapped mounts: the error says what to do.
        s.root = RootFs::Dir {
            path: "/srv/web".into(),
            readonly: false,
        };
        let sys = Recorder::new().fail("idmap_bind", Errno::EINVAL);
        let err = make_mounts(&sys, &s).unwrap_err();
        assert_eq!(err.step, Step::IdmapRoot);
        assert!(err.to_string().contains("lxvirt:userns"), "{err}");
    }

    #[test]
    fn devpts_gid_only_when_mapped() {
        let mut s = spec();
        s.namespaces.user = Some(IdMapping {
            uid: vec![(0, 100000, 1)],
            gid: vec![(0, 100000, 1)],
            idmapped_root: false,
        });
        let sys = Recorder::new();
        make_mounts(&sys, &s).unwrap();
        assert!(sys.has("data=newinstance,ptmxmode=0666,mode=0620"));
        assert!(!sys.has("gid=5"));
    }

    #[test]
    fn device_nodes_without_user_namespace_use_mknod() {
        let mut s = spec();
        s.devices = vec![DeviceNode {
            path: "/dev/sdb".into(),
            kind: DeviceKind::Block,
            major: 8,
            minor: 16,
            mode: 0o660,
        }];
        let sys = Recorder::new();
        run_ok(&sys, &s);
        assert!(exact(&sys, &format!("mknod {ROOT}/dev/sdb b 8:16 660")));
    }

    #[test]
    fn mounts_in_order_with_readonly_honoured_and_targets_created() {
        let mut s = spec();
        s.mounts = vec![
            MountSpec {
                source: MountSource::HostDir("/srv/data".into()),
                target: "/data".into(),
                readonly: true,
            },
            MountSpec {
                source: MountSource::Tmpfs { size: 1 << 20 },
                target: "/scratch/tmp".into(),
                readonly: false,
            },
            MountSpec {
                source: MountSource::Tmpfs { size: 4096 },
                target: "/ro".into(),
                readonly: true,
            },
            MountSpec {
                source: MountSource::ContainerDir("/var/lib/x".into()),
                target: "/x".into(),
                readonly: false,
            },
            MountSpec {
                source: MountSource::HostDir("/etc/resolv.conf".into()),
                target: "/etc/resolv.conf".into(),
                readonly: false,
            },
        ];
        let sys = Recorder::new()
            .missing(format!("{ROOT}/data"))
            .missing(format!("{ROOT}/scratch"))
            .missing(format!("{ROOT}/etc/resolv.conf"))
            .kind("/etc/resolv.conf", FileKind::File);
        run_ok(&sys, &s);
        before(&sys, &format!("mkdir {ROOT}/data 755"), "mount /srv/data");
        before(
            &sys,
            &format!("mount /srv/data {ROOT}/data type=- flags=MS_BIND|MS_REC"),
            &format!("readonly {ROOT}/data recursive"),
        );
        before(
            &sys,
            &format!("mkdir {ROOT}/scratch 755"),
            &format!("mkdir {ROOT}/scratch/tmp 755"),
        );
        assert!(sys.has(&format!(
            "mount tmpfs {ROOT}/scratch/tmp type=tmpfs flags=MS_NOSUID|MS_NODEV data=size=1048576"
        )));
        assert!(sys.has(&format!(
            "mount tmpfs {ROOT}/ro type=tmpfs flags=MS_RDONLY|MS_NOSUID|MS_NODEV data=size=4096"
        )));
        assert!(!sys.has(&format!("readonly {ROOT}/scratch")));
        assert!(sys.has(&format!(
            "mount {ROOT}/var/lib/x {ROOT}/x type=- flags=MS_BIND|MS_REC"
        )));
        before(
            &sys,
            &format!("create {ROOT}/etc/resolv.conf 644"),
            &format!("mount /etc/resolv.conf {ROOT}/etc/resolv.conf"),
        );
        // User mounts come after the basic ones, in spec order.
        before(&sys, "mount devpts", "mount /srv/data");
        before(
            &sys,
            "mount /srv/data",
            &format!("{ROOT}/scratch/tmp type=tmpfs"),
        );
        before(
            &sys,
            &format!("{ROOT}/scratch/tmp type=tmpfs"),
            &format!("{ROOT}/x type"),
        );
    }

    #[test]
    fn target_with_parent_component_is_refused() {
        let mut s = spec();
        s.mounts = vec![MountSpec {
            source: MountSource::Tmpfs { size: 4096 },
            target: "/../../etc".into(),
            readonly: false,
        }];
        let sys = Recorder::new();
        let err = run(&sys, &s);
        assert_eq!(err.step, Step::Mount);
        assert_eq!(err.errno(), Some(Errno::EINVAL));
        assert!(!sys.has("data=size=4096"));
    }

    #[test]
    fn readonly_and_masked_paths_after_user_mounts() {
        let mut s = spec();
        s.mounts = vec![MountSpec {
            source: MountSource::Tmpfs { size: 4096 },
            target: "/tmp".into(),
            readonly: false,
        }];
        s.readonly_paths = vec!["/proc/sys".into(), "/proc/bus".into()];
        s.masked_paths = vec![
            "/proc/kcore".into(),
            "/proc/scsi".into(),
            "/proc/acpi".into(),
            "/sys/firmware".into(),
            "/sys/devices/virtual/powercap".into(),
        ];
        let sys = Recorder::new()
            .missing(format!("{ROOT}/proc/bus"))
            .missing(format!("{ROOT}/proc/scsi"))
            .kind(format!("{ROOT}/proc/kcore"), FileKind::File);
        run_ok(&sys, &s);
        before(
            &sys,
            &format!("{ROOT}/tmp type=tmpfs"),
            &format!("mount {ROOT}/proc/sys"),
        );
        before(
            &sys,
            &format!("mount {ROOT}/proc/sys {ROOT}/proc/sys type=- flags=MS_BIND|MS_REC"),
            &format!("readonly {ROOT}/proc/sys recursive"),
        );
        assert!(!sys.has("proc/bus"));
        assert!(sys.has(&format!(
            "mount /dev/null {ROOT}/proc/kcore type=- flags=MS_BIND"
        )));
        // The empty directory under devpts, detached read-only before
        // devpts covers it, on the first masked directory that exists and
        // bound from there over the others: no superblock of its own.
        assert!(!sys.has("proc/scsi"));
        before(
            &sys,
            &format!("detach_readonly {ROOT}/dev/pts"),
            &format!("mount devpts {ROOT}/dev/pts"),
        );
        assert!(exact(&sys, &format!("attach_tree {ROOT}/proc/acpi")));
        for dir in ["sys/firmware", "sys/devices/virtual/powercap"] {
            assert!(
                exact(
                    &sys,
                    &format!("mount {ROOT}/proc/acpi {ROOT}/{dir} type=- flags=MS_BIND data=-")
                ),
                "{dir}: {:#?}",
                sys.calls()
            );
        }
        assert!(!sys.has("type=tmpfs flags=MS_RDONLY"), "{:#?}", sys.calls());
        before(&sys, &format!("{ROOT}/proc/acpi"), "pivot_root");

        // A kernel without open_tree or mount_setattr: one empty read-only
        // tmpfs instead.
        let sys = Recorder::new()
            .fail("detach_readonly", Errno::ENOSYS)
            .missing(format!("{ROOT}/proc/scsi"))
            .kind(format!("{ROOT}/proc/kcore"), FileKind::File);
        run_ok(&sys, &s);
        assert!(exact(
            &sys,
            &format!(
                "mount tmpfs {ROOT}/proc/acpi type=tmpfs flags=MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC data=mode=555,size=4k"
            )
        ));
        assert!(exact(
            &sys,
            &format!("mount {ROOT}/proc/acpi {ROOT}/sys/firmware type=- flags=MS_BIND data=-")
        ));
        assert!(!sys.has("attach_tree"));
    }

    #[test]
    fn shared_namespaces_skip_hostname_and_bind_sys() {
        let mut s = spec();
        s.namespaces.uts = NsChoice::Host;
        s.namespaces.net = NsChoice::Path("/run/netns/red".into());
        let sys = Recorder::new();
        run_ok(&sys, &s);
        assert!(!sys.has("sethostname"));
        assert!(!sys.has("type=sysfs"));
        before(
            &sys,
            &format!("mount /sys {ROOT}/sys type=- flags=MS_BIND|MS_REC"),
            &format!("readonly {ROOT}/sys recursive"),
        );
    }

    #[test]
    fn security_label_is_quoted_in_mount_options_and_set_for_exec() {
        let mut s = spec();
        s.security = Some(labels_c1_c2());
        s.mounts = vec![MountSpec {
            source: MountSource::Tmpfs { size: 4096 },
            target: "/tmp".into(),
            readonly: false,
        }];
        let sys = Recorder::new();
        run_ok(&sys, &s);
        let ctx = "context=\"system_u:object_r:svirt_sandbox_file_t:s0:c1,c2\"";
        assert!(sys.has(&format!("data=mode=755,{ctx}")));
        assert!(sys.has(&format!(
            "data=newinstance,ptmxmode=0666,mode=0620,gid=5,{ctx}"
        )));
        assert!(sys.has(&format!("data=size=4096,{ctx}")));
        before(
            &sys,
            "capset",
            "write /proc/thread-self/attr/exec system_u:system_r:svirt_lxc_net_t:s0:c1,c2",
        );
        before(&sys, "write /proc/thread-self/attr/exec", "execve");
    }

    #[test]
    fn image_root_is_an_overlay_with_the_context() {
        let mut s = spec();
        s.root = RootFs::Overlay {
            lowerdir: vec!["/s/images/b/layer".into(), "/s/images/a/layer".into()],
            upperdir: "/s/containers/web/upper".into(),
            workdir: "/s/containers/web/work".into(),
        };
        s.security = Some(labels_c1_c2());
        let sys = Recorder::new();
        run_ok(&sys, &s);
        let mount = format!(
            "mount overlay {ROOT} type=overlay flags=0 \
             data=lowerdir=/s/images/b/layer:/s/images/a/layer,upperdir=/s/containers/web/upper,\
             workdir=/s/containers/web/work,redirect_dir=off,metacopy=off,index=off,xino=off,\
             context=\"system_u:object_r:svirt_sandbox_file_t:s0:c1,c2\""
        );
        assert!(sys.has(&mount), "{:#?}", sys.calls());
        before(&sys, &mount, "mount proc");
        // Without a label, no context option.
        s.security = None;
        let sys = Recorder::new();
        run_ok(&sys, &s);
        assert!(sys.has("xino=off"), "{:#?}", sys.calls());
        assert!(!sys.has("context="));
    }

    #[test]
    fn image_layers_are_idmapped_for_an_allocated_range() {
        let mut s = spec();
        s.root = RootFs::Overlay {
            lowerdir: vec!["/s/images/b/layer".into(), "/s/images/a/layer".into()],
            upperdir: "/s/containers/web/upper".into(),
            workdir: "/s/containers/web/work".into(),
        };
        s.namespaces.user = Some(IdMapping {
            idmapped_root: true,
            ..userns()
        });
        let sys = Recorder::new();
        make_mounts(&sys, &s).unwrap();
        // Each layer through an idmapped mount in a scratch tmpfs the
        // overlay covers; the writable layer as it is, its top owned by
        // root inside.
        before(
            &sys,
            &format!("mount tmpfs {ROOT} type=tmpfs"),
            &format!("idmap_bind /s/images/b/layer {ROOT}/0 single"),
        );
        assert!(sys.has(&format!("idmap_bind /s/images/a/layer {ROOT}/1 single")));
        assert!(sys.has("ensure_owner /s/containers/web/upper 100000:100000"));
        before(
            &sys,
            "ensure_owner /s/containers/web/upper",
            &format!(
                "mount overlay {ROOT} type=overlay flags=0 data=lowerdir={ROOT}/0:{ROOT}/1,upperdir=/s/containers/web/upper,"
            ),
        );
        // A store on a filesystem without idmapped mounts: named.
        let sys = Recorder::new().fail("idmap_bind", Errno::EINVAL);
        let err = make_mounts(&sys, &s).unwrap_err();
        assert_eq!(err.step, Step::IdmapRoot);
        assert_eq!(err.path.as_deref(), Some(Path::new("/s/images/b/layer")));
    }

    #[test]
    fn missing_selinux_fails_only_with_a_label() {
        let mut s = spec();
        s.security = Some(labels_c1_c2());
        let sys = Recorder::new().fail("write /proc/thread-self/attr/exec", Errno::EINVAL);
        let err = run(&sys, &s);
        assert_eq!(err.step, Step::SecurityLabel);
        assert!(
            err.to_string().contains("svirt_lxc_net_t:s0:c1,c2"),
            "{err}"
        );
    }

    #[test]
    fn block_and_file_filesystems_try_types_in_order() {
        let mut s = spec();
        s.root = RootFs::File {
            path: "/var/lib/lxvirt/web.img".into(),
            readonly: true,
        };
        s.mounts = vec![MountSpec {
            source: MountSource::Block("/dev/sdc1".into()),
            target: "/srv".into(),
            readonly: false,
        }];
        let sys = Recorder::new()
            .file(
                "/proc/filesystems",
                "nodev\tproc\n\text3\n\text4\n\txfs\n\tbtrfs\n\tvfat\n",
            )
            .fail(&format!("mount /dev/loop0 {ROOT} type=ext4"), Errno::EINVAL)
            .fail(
                &format!("mount /dev/sdc1 {ROOT}/srv type=ext4"),
                Errno::EINVAL,
            )
            .fail(
                &format!("mount /dev/sdc1 {ROOT}/srv type=xfs"),
                Errno::EINVAL,
            );
        run_ok(&sys, &s);
        before(
            &sys,
            "loop_attach /var/lib/lxvirt/web.img ro=true",
            &format!("mount /dev/loop0 {ROOT} type=ext4 flags=MS_RDONLY"),
        );
        before(
            &sys,
            &format!("mount /dev/loop0 {ROOT} type=ext4"),
            &format!("mount /dev/loop0 {ROOT} type=xfs flags=MS_RDONLY"),
        );
        assert!(!sys.has(&format!("mount /dev/loop0 {ROOT} type=btrfs")));
        assert!(sys.has(&format!("mount /dev/sdc1 {ROOT}/srv type=btrfs flags=0")));
        assert!(
            !sys.has("type=ext3"),
            "ext3 is not tried after ext4 succeeded"
        );
    }

    #[test]
    fn block_mount_permission_error_stops_the_search() {
        let mut s = spec();
        s.root = RootFs::Block {
            dev: "/dev/sdc".into(),
            readonly: false,
        };
        let sys = Recorder::new().fail("mount /dev/sdc", Errno::EPERM);
        let err = run(&sys, &s);
        assert_eq!(err.step, Step::RootFs);
        assert_eq!(err.errno(), Some(Errno::EPERM));
        let tries = sys
            .calls()
            .iter()
            .filter(|c| c.contains("mount /dev/sdc"))
            .count();
        assert_eq!(tries, 1);
        assert!(
            err.to_string().starts_with(
                "cannot mount the root filesystem /dev/sdc: Operation not permitted (EPERM)"
            ),
            "{err}"
        );
    }

    #[test]
    fn failing_mount_names_the_target_and_errno() {
        let mut s = spec();
        s.mounts = vec![MountSpec {
            source: MountSource::Tmpfs { size: 4096 },
            target: "/data".into(),
            readonly: false,
        }];
        let sys = Recorder::new().fail(&format!("mount tmpfs {ROOT}/data"), Errno::EACCES);
        let err = run(&sys, &s);
        assert_eq!(err.step, Step::Mount);
        assert_eq!(err.path.as_deref(), Some(Path::new("/data")));
        assert_eq!(err.errno(), Some(Errno::EACCES));
        assert_eq!(
            err.to_string(),
            "cannot mount /data inside the container: Permission denied (EACCES); check its <filesystem> element"
        );
        assert!(!sys.has("pivot_root"), "nothing after the failure");
    }

    /// A root without /proc seen through an idmapped mount: the kernel
    /// refuses the directory with EOVERFLOW, and the message says to make
    /// it (not what EOVERFLOW means).
    #[test]
    fn a_mount_point_the_mapping_cannot_make_says_to_create_it() {
        let sys = Recorder::new()
            .missing(format!("{ROOT}/proc"))
            .fail(&format!("mkdir {ROOT}/proc"), Errno::EOVERFLOW);
        let err = run(&sys, &spec());
        assert_eq!(
            (err.step, err.errno()),
            (Step::Proc, Some(Errno::EOVERFLOW))
        );
        assert_eq!(
            err.to_string(),
            "cannot mount /proc at /proc: Value too large for defined data type (EOVERFLOW); the root has no /proc (or a directory above it), and it cannot be made through the root's id mapping: create it in the root filesystem"
        );
        // Another step's EOVERFLOW keeps its own hint.
        let other = SetupError::new(Step::Exec, Some(Path::new("/sbin/init")), Errno::EOVERFLOW);
        assert!(!other.to_string().contains("create it"), "{other}");
    }

    #[test]
    fn exec_failure_message_is_actionable() {
        let sys = Recorder::new().fail("execve", Errno::ENOENT);
        let err = run(&sys, &spec());
        assert_eq!(
            err.to_string(),
            "cannot execute init /sbin/init inside the container: No such file or directory (ENOENT); check <init> and the root filesystem"
        );
        let json = serde_json::to_string(&err).unwrap();
        assert_eq!(serde_json::from_str::<SetupError>(&json).unwrap(), err);
    }

    #[test]
    fn init_user_by_name_number_and_unknown() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        let group = "root:x:0:\nusers:x:100:alice\n";
        let mut s = spec();
        s.no_new_privs = true;
        s.init.user = Some(IdSpec::Name("alice".into()));
        let sys = Recorder::new()
            .file("/etc/passwd", passwd)
            .file("/etc/group", group);
        run_ok(&sys, &s);
        before(&sys, "setgroups []", "setresgid 1000");
        before(&sys, "setresgid 1000", "setresuid 1000");
        assert!(!sys.has("capset"), "a non-root init keeps no capabilities");
        before(&sys, "setresuid 1000", "no_new_privs");

        s.init.group = Some(IdSpec::Name("users".into()));
        let sys = Recorder::new()
            .file("/etc/passwd", passwd)
            .file("/etc/group", group);
        run_ok(&sys, &s);
        assert!(exact(&sys, "setresgid 100"));

        s.init.user = Some(IdSpec::Name("4242".into()));
        s.init.group = Some(IdSpec::Id(7));
        let sys = Recorder::new().file("/etc/passwd", passwd);
        run_ok(&sys, &s);
        assert!(exact(&sys, "setresuid 4242") && exact(&sys, "setresgid 7"));

        s.init.user = Some(IdSpec::Name("bob".into()));
        let sys = Recorder::new().file("/etc/passwd", passwd);
        let err = run(&sys, &s);
        assert_eq!(err.step, Step::InitUser);
        assert_eq!(
            err.to_string(),
            "init user 'bob' is not in the container's /etc/passwd; check <inituser> and the container's /etc/passwd"
        );
        assert!(!sys.has("setresuid"));
    }

    fn with_filter(deny: &[&str]) -> ContainerSpec {
        let mut s = spec();
        s.seccomp = Some(SeccompSpec {
            deny_mount: true,
            deny: deny.iter().map(|d| d.to_string()).collect(),
        });
        s
    }

    /// The position of the last logged call containing `needle`.
    /// The labels of a container with the category pair c1,c2.
    fn labels_c1_c2() -> SecuritySpec {
        SecuritySpec {
            process_label: "system_u:system_r:svirt_lxc_net_t:s0:c1,c2".into(),
            image_label: "system_u:object_r:svirt_sandbox_file_t:s0:c1,c2".into(),
            relabel_root: false,
        }
    }

    fn last(sys: &Recorder, needle: &str) -> usize {
        sys.calls()
            .iter()
            .rposition(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no {needle}: {:#?}", sys.calls()))
    }

    #[test]
    fn seccomp_goes_in_last_when_init_keeps_sys_admin() {
        let mut s = with_filter(&[]);
        s.capabilities = vec![0, 21];
        s.security = Some(labels_c1_c2());
        let sys = Recorder::new();
        run_ok(&sys, &s);
        let seccomp = last(&sys, "seccomp ");
        assert_eq!(seccomp + 1, last(&sys, "execve"), "{:#?}", sys.calls());
        before(&sys, "capset", "seccomp ");
        before(&sys, "write /proc/thread-self/attr/exec", "seccomp ");
        before(&sys, "cloexec_from", "seccomp ");
        assert_eq!(
            sys.calls()
                .iter()
                .filter(|c| c.starts_with("seccomp "))
                .count(),
            1
        );
    }

    #[test]
    fn seccomp_goes_in_before_the_identity_switch_that_drops_sys_admin() {
        // Root without CAP_SYS_ADMIN and without no_new_privs: the kernel
        // would refuse the filter after capset.
        let mut s = with_filter(&["uname"]);
        s.capabilities = vec![0];
        let sys = Recorder::new();
        run_ok(&sys, &s);
        before(&sys, "ambient_clear", "seccomp ");
        before(&sys, "seccomp ", "setgroups");
        before(&sys, "seccomp ", "capset");

        // A non-root init loses every capability with setresuid.
        let mut s = with_filter(&[]);
        s.init.user = Some(IdSpec::Id(1000));
        let sys = Recorder::new();
        run_ok(&sys, &s);
        before(&sys, "seccomp ", "setresuid 1000");

        // With no_new_privs, last again.
        s.no_new_privs = true;
        let sys = Recorder::new();
        run_ok(&sys, &s);
        before(&sys, "no_new_privs", "seccomp ");
        assert_eq!(last(&sys, "seccomp ") + 1, last(&sys, "execve"));
    }

    #[test]
    fn no_filter_without_a_seccomp_spec() {
        let sys = Recorder::new();
        run_ok(&sys, &spec());
        assert!(!sys.has("seccomp "));
    }

    #[test]
    fn bad_filters_fail_before_anything_is_done() {
        let sys = Recorder::new();
        let err = run(&sys, &with_filter(&["uname", "nosuchcall"]));
        assert_eq!(err.step, Step::Seccomp);
        assert!(sys.calls().is_empty(), "{:#?}", sys.calls());
        assert!(
            err.to_string()
                .starts_with("cannot build the seccomp filter: unknown syscall 'nosuchcall' on "),
            "{err}"
        );

        let sys = Recorder::new().fail("seccomp ", Errno::EACCES);
        let err = run(&sys, &with_filter(&[]));
        assert_eq!(err.step, Step::Seccomp);
        assert_eq!(
            err.to_string(),
            "cannot install the seccomp filter: Permission denied (EACCES); check <lxvirt:seccomp>, or turn the filter off with mode='off'"
        );
        assert!(!sys.has("execve"));
    }
}
