//! The seam between the cgroup logic and the kernel: every directory and
//! file operation on the cgroup file systems, and the signal `kill_all`
//! sends, go through [`CgroupFs`], so unit tests stand in for the kernel
//! with a temporary tree of plain files.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::bpf::{self, BpfError};
use super::bpf_devices::Insn;

/// The file operations the cgroup layer needs.
pub trait CgroupFs {
    /// Creates one directory (not its parents); `AlreadyExists` if it is there.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes one empty cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Renames a cgroup directory within its parent (v1 only).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Writes `value` with a single `write(2)` to an existing file; a
    /// missing file is `NotFound` (it is never created).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<String>;
    /// The child directories (child cgroups) of a directory.
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Sends SIGKILL to a process.
    fn kill(&self, pid: i32) -> nix::Result<()>;
    /// Loads `program` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program and
    /// attaches it to the cgroup2 directory `dir` (`BPF_F_ALLOW_MULTI`).
    fn attach_device_program(&self, dir: &Path, program: &[Insn]) -> Result<(), BpfError>;
    /// Replaces the device program lxvirt attached to the cgroup2
    /// directory `dir` with `program` (a running container's allow-list
    /// changed).
    fn replace_device_program(&self, dir: &Path, program: &[Insn]) -> Result<(), BpfError>;
    /// Whether a device program is attached to the cgroup2 directory `dir`.
    fn has_device_program(&self, dir: &Path) -> Result<bool, BpfError>;
}

/// The real cgroup file systems.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFs;

impl CgroupFs for HostFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: a missing interface file means a missing controller.
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(value.as_bytes())
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        chown(path, Some(uid), Some(gid))
    }

    fn kill(&self, pid: i32) -> nix::Result<()> {
        kill(Pid::from_raw(pid), Signal::SIGKILL)
    }

    fn attach_device_program(&self, dir: &Path, program: &[Insn]) -> Result<(), BpfError> {
        bpf::attach_device_program(dir, program)
    }

    fn replace_device_program(&self, dir: &Path, program: &[Insn]) -> Result<(), BpfError> {
        bpf::replace_device_program(dir, program)
    }

    fn has_device_program(&self, dir: &Path) -> Result<bool, BpfError> {
        Ok(bpf::device_programs(dir)? > 0)
    }
}
