//! cgroup2's `favordynmods`: every move of a process into a cgroup (init
//! into its container's cgroups, in every hierarchy) takes the kernel's
//! thread-group lock for writing, which by default waits for an RCU grace
//! period, 5-15 ms on this machine kind, at every start: most of a start's
//! time. With `favordynmods` the lock stays in the mode where writers do
//! not wait (forks and exits pay a little more), as the kernel documents
//! for hosts whose cgroups change often. lxvirtd sets it on the cgroup2
//! mount, keeping every other option of the mount and of the hierarchy
//! (`nsdelegate`, `memory_recursiveprot`, …), unless told not to
//! (`--cgroup-favordynmods=false`).

use std::path::PathBuf;

use nix::mount::MsFlags;

use crate::sys::mountinfo::MountInfo;

const OPTION: &str = "favordynmods";

/// What a remount needs: the mount point, the per-mount flags it has now
/// (a remount sets them as given) and the hierarchy's options with
/// `favordynmods` added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remount {
    pub mount_point: PathBuf,
    pub flags: MsFlags,
    pub data: String,
}

/// The remount that turns `favordynmods` on, or `None` when there is no
/// cgroup2 mount or it is on already.
pub fn remount(mounts: &[MountInfo]) -> Option<Remount> {
    let mount = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    if mount.super_options().any(|o| o == OPTION) {
        return None;
    }
    let mut flags = MsFlags::MS_REMOUNT;
    for option in mount.options.split(',') {
        flags |= match option {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    let mut data: Vec<&str> = mount
        .super_options()
        .filter(|o| *o != "rw" && *o != "ro")
        .collect();
    data.push(OPTION);
    Some(Remount {
        mount_point: mount.mount_point.clone(),
        flags,
        data: data.join(","),
    })
}

/// Turns `favordynmods` on where it is off; `Ok(Some(mount point))` when
/// it was changed.
pub fn favor_dynamic_changes() -> std::io::Result<Option<PathBuf>> {
    let mounts = crate::sys::mountinfo::read(std::path::Path::new("/proc/self/mountinfo"))?;
    let Some(remount) = remount(&mounts) else {
        return Ok(None);
    };
    nix::mount::mount(
        None::<&str>,
        &remount.mount_point,
        None::<&str>,
        remount.flags,
        Some(remount.data.as_str()),
    )?;
    Ok(Some(remount.mount_point))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mounts(line: &str) -> Vec<MountInfo> {
        crate::sys::mountinfo::parse(format!(
            "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n{line}\n"
        ))
    }

    #[test]
    fn a_systemd_hosts_options_are_kept() {
        let m = mounts(
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
        );
        assert_eq!(
            remount(&m).unwrap(),
            Remount {
                mount_point: "/sys/fs/cgroup".into(),
                flags: MsFlags::MS_REMOUNT
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_RELATIME,
                data: "nsdelegate,memory_recursiveprot,favordynmods".into(),
            }
        );
    }

    #[test]
    fn a_hybrid_hosts_unified_mount_and_one_already_on() {
        let m = mounts("31 23 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw");
        let r = remount(&m).unwrap();
        assert_eq!(r.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(r.flags, MsFlags::MS_REMOUNT | MsFlags::MS_RELATIME);
        assert_eq!(r.data, "favordynmods");
        let on = mounts(
            "31 23 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods",
        );
        assert_eq!(remount(&on), None);
        assert_eq!(remount(&mounts("")), None);
    }
}
