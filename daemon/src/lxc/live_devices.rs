//! Disks, host devices and filesystems added to, removed from and changed
//! in a running container, by the daemon. A device node goes into the
//! container's /dev and its access into the cgroup's allow-list; a
//! filesystem is mounted with the new mount API: the mount tree of the
//! source is cloned (`open_tree`), and a thread of the daemon's own that
//! joined the container's mount namespace puts it on the target
//! (`move_mount`). Nothing runs inside the container, and that thread's
//! root is the container's, so no path the container controls leads out
//! of it.
//!
//! As at start, a host directory is bound as it is (not idmapped): in a
//! user namespace its files show the owners the mapping gives them.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag};
use nix::mount::MntFlags;
use nix::sys::stat::{Mode, SFlag};

use super::convert::{self, ConvertError};
use super::spec::{DeviceKind, DeviceNode};
use crate::cgroup::{CgroupError, Cgroups, DeviceRule};
use crate::domain::{DeviceDef, Disk, DomainDef, Filesystem, FsSource, Hostdev};
use crate::driver::ErrorKind;
use crate::sys::linux;

/// Why a device could not be changed in a running container.
#[derive(Debug, thiserror::Error)]
pub enum LiveDeviceError {
    #[error("{what} cannot be {verb} while the container runs; {fix}")]
    NotLive {
        what: String,
        verb: &'static str,
        fix: &'static str,
    },
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot {step} {} inside the container: {}", path.display(), linux::errno_desc(*errno))]
    Inside {
        step: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error("cannot take the mount tree of {} on the host: {}", path.display(), linux::errno_desc(*errno))]
    Source { path: PathBuf, errno: Errno },
    #[error("cannot reach the container's mount namespace: {}", linux::errno_desc(*.0))]
    Namespace(Errno),
    #[error("cannot change the interface's link state: {0}")]
    Link(#[from] super::hotplug::HotplugError),
}

impl From<Errno> for LiveDeviceError {
    fn from(errno: Errno) -> LiveDeviceError {
        LiveDeviceError::Namespace(errno)
    }
}

impl LiveDeviceError {
    /// How the driver's caller should see it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LiveDeviceError::NotLive { .. } => ErrorKind::NotSupported,
            LiveDeviceError::Convert(_) | LiveDeviceError::Source { .. } => {
                ErrorKind::InvalidArgument
            }
            _ => ErrorKind::Failed,
        }
    }
}

/// The running container a change applies to.
#[derive(Debug)]
pub struct Container<'a> {
    pub init_pid: i32,
    pub cgroups: &'a Cgroups,
    pub cgroup_path: &'a Path,
}

impl Container<'_> {
    /// The whole allow-list of a container of `live`, where the host needs
    /// it (cgroup2's program; a v1 list changes rule by rule, and needs
    /// no look at the other devices' host nodes, some of which may be
    /// gone).
    fn whole_list(&self, live: &DomainDef) -> Result<Option<Vec<DeviceRule>>, LiveDeviceError> {
        if self.cgroups.devices_by_program() {
            Ok(convert::device_rules(live)?)
        } else {
            Ok(None)
        }
    }
}

const REATTACH: &str =
    "detach it and attach the new one, or change the definition (--config) and restart the domain";
const AT_START: &str = "attach it with --config and restart the domain";

/// Adds `device` to the container, whose live definition becomes `live`.
pub fn attach(
    container: &Container<'_>,
    live: &DomainDef,
    device: &DeviceDef,
) -> Result<(), LiveDeviceError> {
    match device {
        DeviceDef::Disk(disk) => attach_node(container, live, disk_node(live, disk)?),
        DeviceDef::Hostdev(hostdev) => match convert::hostdev_node(live.name(), hostdev)? {
            Some(node) => attach_node(container, live, node),
            None => Err(not_live(device, "attached", AT_START)),
        },
        DeviceDef::Filesystem(fs) => mount(container, fs),
        DeviceDef::Interface(_) => Err(not_live(device, "attached", AT_START)),
    }
}

/// Removes `device` (as the live definition had it) from the container,
/// whose live definition becomes `live`.
pub fn detach(
    container: &Container<'_>,
    live: &DomainDef,
    device: &DeviceDef,
) -> Result<(), LiveDeviceError> {
    let (path, host_node) = match device {
        DeviceDef::Disk(disk) => (
            PathBuf::from("/dev").join(&disk.target_dev),
            convert::disk_node(live.name(), disk).and_then(Result::ok),
        ),
        DeviceDef::Hostdev(
            hostdev @ (Hostdev::Storage { block: path } | Hostdev::Misc { char_dev: path }),
        ) => (
            path.clone(),
            convert::hostdev_node(live.name(), hostdev).ok().flatten(),
        ),
        DeviceDef::Filesystem(fs) => return unmount(container, fs),
        DeviceDef::Hostdev(_) | DeviceDef::Interface(_) => {
            return Err(not_live(device, "detached", REATTACH));
        }
    };
    // The numbers to deny: the host's node, else (gone from the host) the
    // one inside.
    let inside = linux::in_mount_namespace_of(container.init_pid, || {
        Ok::<_, LiveDeviceError>(node_numbers(&path))
    })?;
    let rule = host_node
        .map(|node| convert::node_rule(&node))
        .or_else(|| inside.map(|(kind, major, minor)| rule_of(kind, major, minor, "rwm")));
    if let Some(mut rule) = rule {
        rule.access = "rwm".into();
        let all = container.whole_list(live)?;
        container
            .cgroups
            .change_devices(container.cgroup_path, &[], &[rule], all.as_deref())?;
    }
    linux::in_mount_namespace_of(container.init_pid, || remove_node(&path))
}

/// Changes `old` into `new` in the container (the same device: only what
/// can change while it runs may differ), whose live definition becomes
/// `live`.
pub fn update(
    container: &Container<'_>,
    live: &DomainDef,
    old: &DeviceDef,
    new: &DeviceDef,
) -> Result<(), LiveDeviceError> {
    match (old, new) {
        (DeviceDef::Disk(old), DeviceDef::Disk(disk)) => {
            if (Disk {
                readonly: disk.readonly,
                ..old.clone()
            }) != *disk
            {
                return Err(not_live(new, "changed but for <readonly/>", REATTACH));
            }
            if old.readonly == disk.readonly {
                return Ok(());
            }
            let node = disk_node(live, disk)?;
            let rule = convert::node_rule(&node);
            let all = container.whole_list(live)?;
            let (allow, deny) = if disk.readonly {
                (
                    Vec::new(),
                    vec![DeviceRule {
                        access: "w".into(),
                        ..rule
                    }],
                )
            } else {
                (vec![rule], Vec::new())
            };
            container.cgroups.change_devices(
                container.cgroup_path,
                &allow,
                &deny,
                all.as_deref(),
            )?;
            let owner = root_inside(container.init_pid);
            linux::in_mount_namespace_of(container.init_pid, || remake_node(&node, owner))
        }
        (DeviceDef::Filesystem(old), DeviceDef::Filesystem(fs)) => {
            if (Filesystem {
                readonly: fs.readonly,
                ..old.clone()
            }) != *fs
            {
                return Err(not_live(new, "changed but for <readonly/>", REATTACH));
            }
            if old.readonly == fs.readonly {
                return Ok(());
            }
            let target = fs.target.clone();
            linux::in_mount_namespace_of(container.init_pid, || {
                let mounted = open_inside(&target)?;
                linux::set_tree_readonly(mounted.as_fd(), fs.readonly)
                    .map_err(|errno| inside("remount", &target, errno))
            })
        }
        // The core let only <link state> and <bandwidth> differ.
        (DeviceDef::Interface(old), DeviceDef::Interface(interface)) => Ok(super::hotplug::update(
            live,
            old,
            interface,
            container.init_pid,
        )?),
        _ if old == new => Ok(()),
        _ => Err(not_live(new, "changed", REATTACH)),
    }
}

fn not_live(device: &DeviceDef, verb: &'static str, fix: &'static str) -> LiveDeviceError {
    let what = match device {
        DeviceDef::Hostdev(Hostdev::Net { .. }) => {
            "a <hostdev type='net'> (moved in at start, back at stop)".to_owned()
        }
        DeviceDef::Hostdev(Hostdev::Usb { .. }) => "a USB <hostdev>".to_owned(),
        DeviceDef::Filesystem(fs) => format!("a <filesystem type='{}'>", fs.source.type_str()),
        other => format!("a <{}>", other.element()),
    };
    LiveDeviceError::NotLive { what, verb, fix }
}

fn inside(step: &'static str, path: &Path, errno: Errno) -> LiveDeviceError {
    LiveDeviceError::Inside {
        step,
        path: path.to_owned(),
        errno,
    }
}

fn disk_node(live: &DomainDef, disk: &Disk) -> Result<DeviceNode, LiveDeviceError> {
    match convert::disk_node(live.name(), disk) {
        Some(node) => Ok(node?),
        None => Err(LiveDeviceError::NotLive {
            what: "a <disk> other than type='block'".into(),
            verb: "attached",
            fix: "containers take block disks only",
        }),
    }
}

fn rule_of(kind: DeviceKind, major: u32, minor: u32, access: &str) -> DeviceRule {
    DeviceRule {
        kind: match kind {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        },
        major: Some(major),
        minor: Some(minor),
        access: access.into(),
    }
}

/// Allows the node's device, then makes the node inside; if the node
/// cannot be made, the access goes again.
fn attach_node(
    container: &Container<'_>,
    live: &DomainDef,
    node: DeviceNode,
) -> Result<(), LiveDeviceError> {
    let rule = convert::node_rule(&node);
    let all = container.whole_list(live)?;
    container.cgroups.change_devices(
        container.cgroup_path,
        std::slice::from_ref(&rule),
        &[],
        all.as_deref(),
    )?;
    let owner = root_inside(container.init_pid);
    let made = linux::in_mount_namespace_of(container.init_pid, || make_node(&node, owner));
    if made.is_err() {
        let before = all.map(|mut rules| {
            if let Some(at) = rules.iter().rposition(|r| *r == rule) {
                rules.remove(at);
            }
            rules
        });
        let _ = container.cgroups.change_devices(
            container.cgroup_path,
            &[],
            &[rule],
            before.as_deref(),
        );
    }
    made
}

/// The host uid and gid of root inside the container (`0, 0` without a
/// user namespace), from its init's maps.
fn root_inside(init_pid: i32) -> (u32, u32) {
    let root_of = |map: &str| -> Option<u32> {
        let text = std::fs::read_to_string(format!("/proc/{init_pid}/{map}")).ok()?;
        text.lines().find_map(|line| {
            let mut fields = line.split_whitespace().map(str::parse::<u32>);
            match (fields.next(), fields.next()) {
                (Some(Ok(0)), Some(Ok(outside))) => Some(outside),
                _ => None,
            }
        })
    };
    (
        root_of("uid_map").unwrap_or(0),
        root_of("gid_map").unwrap_or(0),
    )
}

/// The thread acting on the container's files as its root does: its
/// filesystem ids become root inside's host ids (an idmapped root refuses
/// files of ids it does not map, and what is made belongs to root inside),
/// and its own again on drop. Per thread: the ns thread alone changes.
struct AsRootInside;

impl AsRootInside {
    fn new(owner: (u32, u32)) -> AsRootInside {
        nix::unistd::setfsgid(owner.1.into());
        nix::unistd::setfsuid(owner.0.into());
        AsRootInside
    }
}

impl Drop for AsRootInside {
    fn drop(&mut self) {
        // Back to 0: the capabilities a non-zero fsuid dropped
        // (CAP_MKNOD, CAP_DAC_OVERRIDE…) come back.
        nix::unistd::setfsuid(0.into());
        nix::unistd::setfsgid(0.into());
    }
}

/// Makes the missing directories of `path` (absolute, inside) and, when
/// `last` says so, its last component (a directory, or an empty file), as
/// root inside. Run in the container's mount namespace, whose root is the
/// thread's: links resolve within it.
fn ensure_inside(
    path: &Path,
    last: Option<SFlag>,
    owner: (u32, u32),
) -> Result<(), LiveDeviceError> {
    let _as_root_inside = AsRootInside::new(owner);
    let mut at = PathBuf::from("/");
    let components: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    for (index, name) in components.iter().enumerate() {
        at.push(name);
        let is_last = index + 1 == components.len();
        let made = match (is_last, last) {
            (false, _) | (true, Some(SFlag::S_IFDIR)) => {
                nix::unistd::mkdir(&at, Mode::from_bits_truncate(0o755))
            }
            (true, Some(_)) => nix::fcntl::open(
                &at,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop),
            (true, None) => break,
        };
        match made {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(inside("make", &at, errno)),
        }
    }
    Ok(())
}

/// An `O_PATH` descriptor of `path` inside (the top mount there), no
/// magic link followed.
fn open_inside(path: &Path) -> Result<OwnedFd, LiveDeviceError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(AT_FDCWD, path, how).map_err(|errno| inside("open", path, errno))
}

/// Makes the node inside (its parents too), owned by root inside, with
/// the host node's mode (the thread's umask is its own, and cleared).
fn make_node(node: &DeviceNode, owner: (u32, u32)) -> Result<(), LiveDeviceError> {
    ensure_inside(&node.path, None, owner)?;
    let kind = match node.kind {
        DeviceKind::Char => SFlag::S_IFCHR,
        DeviceKind::Block => SFlag::S_IFBLK,
    };
    let dev = nix::sys::stat::makedev(node.major.into(), node.minor.into());
    nix::sys::stat::umask(Mode::empty());
    nix::sys::stat::mknod(
        &node.path,
        kind,
        Mode::from_bits_truncate(node.mode & 0o7777),
        dev,
    )
    .map_err(|errno| inside("make the device node", &node.path, errno))?;
    nix::unistd::fchownat(
        AT_FDCWD,
        &node.path,
        Some(owner.0.into()),
        Some(owner.1.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|errno| inside("give root the device node", &node.path, errno))
}

/// Makes the node anew with `node`'s mode: unlinked and made again, as
/// chmod would follow a link root inside may have put there.
fn remake_node(node: &DeviceNode, owner: (u32, u32)) -> Result<(), LiveDeviceError> {
    remove_node(&node.path)?;
    make_node(node, owner)
}

/// The kind and numbers of the device node at `path` inside, if one is
/// there.
fn node_numbers(path: &Path) -> Option<(DeviceKind, u32, u32)> {
    let stat = nix::sys::stat::lstat(path).ok()?;
    let kind = match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFCHR => DeviceKind::Char,
        SFlag::S_IFBLK => DeviceKind::Block,
        _ => return None,
    };
    Some((
        kind,
        nix::sys::stat::major(stat.st_rdev) as u32,
        nix::sys::stat::minor(stat.st_rdev) as u32,
    ))
}

/// Removes the device node at `path` inside; something else there (root
/// inside put it) stays, and a node already gone is no error.
fn remove_node(path: &Path) -> Result<(), LiveDeviceError> {
    if node_numbers(path).is_none() {
        return Ok(());
    }
    match nix::unistd::unlink(path) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(inside("remove the device node", path, errno)),
    }
}

/// Mounts a `mount` (host directory or file) or `bind` (directory of the
/// container's) filesystem at its target inside.
fn mount(container: &Container<'_>, fs: &Filesystem) -> Result<(), LiveDeviceError> {
    let owner = root_inside(container.init_pid);
    let target = fs.target.clone();
    let readonly = fs.readonly;
    let place = move |tree: OwnedFd, is_dir: bool| -> Result<(), LiveDeviceError> {
        if readonly {
            linux::set_tree_readonly(tree.as_fd(), true)
                .map_err(|errno| inside("make read-only the mount for", &target, errno))?;
        }
        let last = if is_dir {
            SFlag::S_IFDIR
        } else {
            SFlag::S_IFREG
        };
        ensure_inside(&target, Some(last), owner)?;
        let at = open_inside(&target)?;
        linux::move_tree(tree.as_fd(), at.as_fd())
            .map_err(|errno| inside("mount on", &target, errno))
    };
    match &fs.source {
        FsSource::Mount { dir } => {
            let source = |errno| LiveDeviceError::Source {
                path: dir.clone(),
                errno,
            };
            let is_dir = std::fs::metadata(dir)
                .map_err(|e| source(linux::io_errno(e)))?
                .is_dir();
            let tree = linux::clone_tree(AT_FDCWD, dir).map_err(source)?;
            linux::in_mount_namespace_of(container.init_pid, move || place(tree, is_dir))
        }
        FsSource::Bind { dir } => {
            let dir = dir.clone();
            linux::in_mount_namespace_of(container.init_pid, move || {
                let source = open_inside(&dir)?;
                let is_dir = nix::sys::stat::fstat(&source)
                    .map(|s| SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
                    .map_err(|errno| inside("look at", &dir, errno))?;
                let tree = linux::clone_tree(source.as_fd(), Path::new(""))
                    .map_err(|errno| inside("take the mount tree of", &dir, errno))?;
                place(tree, is_dir)
            })
        }
        _ => Err(not_live(
            &DeviceDef::Filesystem(fs.clone()),
            "attached",
            AT_START,
        )),
    }
}

/// Unmounts the filesystem at its target inside (lazily: a process still
/// using it keeps it until it lets go). Nothing mounted there any more is
/// no error: root inside may have unmounted it.
fn unmount(container: &Container<'_>, fs: &Filesystem) -> Result<(), LiveDeviceError> {
    let target = fs.target.clone();
    linux::in_mount_namespace_of(container.init_pid, move || {
        match nix::mount::umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
            Err(errno) => Err(inside("unmount", &target, errno)),
        }
    })
}
