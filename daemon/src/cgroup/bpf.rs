//! `bpf(2)` for the device program of [`super::bpf_devices`]: load it,
//! attach it to a cgroup2 directory, and ask whether one is attached. The
//! only `unsafe` code of the cgroup layer; [`super::HostFs`] calls it.
//!
//! Kernel facts (uapi/linux/bpf.h): the commands `BPF_PROG_LOAD` (5),
//! `BPF_PROG_ATTACH` (8) and `BPF_PROG_QUERY` (16); program type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` (15); attach type `BPF_CGROUP_DEVICE`
//! (6) with `BPF_F_ALLOW_MULTI`, so that programs attached above (by a
//! service manager) and below (by a nested runtime) all run, and every
//! one of them must allow an access.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::bpf_devices::Insn;

const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The program uses no helper, so no GPL-only one: the project's licence.
const LICENSE: &std::ffi::CStr = c"MIT OR Apache-2.0";
/// Shown by `bpftool prog` (at most 15 bytes).
const NAME: &[u8] = b"lxvirt_devices";
/// Room for the verifier's log of a refused program.
const LOG_SIZE: usize = 64 * 1024;
/// The longest verifier log kept in an error.
const LOG_KEPT: usize = 2000;

/// Why a device program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("cannot open the cgroup directory")]
    Open(#[source] io::Error),
    #[error("the kernel refused the device program{}", verifier_log(.log))]
    Load {
        /// The verifier's log (its end), empty if it gave none.
        log: String,
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused to attach the device program")]
    Attach(#[source] io::Error),
    #[error("cannot ask the kernel for the cgroup's device programs")]
    Query(#[source] io::Error),
    #[error("the kernel refused to detach the former device program")]
    Detach(#[source] io::Error),
}

impl BpfError {
    /// The `errno` the kernel answered, if it did.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::Open(e) | BpfError::Attach(e) | BpfError::Query(e) | BpfError::Detach(e) => {
                e.raw_os_error()
            }
            BpfError::Load { source, .. } => source.raw_os_error(),
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match (self, self.errno()) {
            (BpfError::Open(_), _) => "the directory cannot be opened",
            (_, Some(libc::EPERM | libc::EACCES)) => {
                "loading and attaching an eBPF program needs CAP_SYS_ADMIN (or CAP_BPF and CAP_NET_ADMIN) in the host's user namespace; run lxvirtd as root on the host"
            }
            (BpfError::Load { log, .. }, _) if !log.is_empty() => {
                "the kernel's verifier refused the program lxvirt made; please report this with the verifier log"
            }
            (_, Some(libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)) => {
                "the kernel lacks eBPF device programs for cgroup2: it needs CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF (linux 5.1 or later)"
            }
            _ => "the kernel refused the eBPF device program",
        }
    }
}

fn verifier_log(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier log: {log}")
    }
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for `BPF_PROG_QUERY`, up to `prog_cnt`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

/// An attribute with zeroes after it: the kernel takes any size up to a
/// page whose bytes past its own `union bpf_attr` are zero, and some
/// commands write results to fields past the ones set here (`BPF_PROG_QUERY`
/// writes `revision` at offset 56 on linux 6.6 and later), which must land
/// in memory of this call.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Where `name` sits in `struct bpf_prog_info`, and its length.
const PROG_INFO_NAME: std::ops::Range<usize> = 64..80;

#[repr(C)]
struct Padded<T> {
    attr: T,
    tail: [u8; 256],
}

impl<T> Padded<T> {
    fn new(attr: T) -> Padded<T> {
        Padded {
            attr,
            tail: [0; 256],
        }
    }
}

/// `bpf(cmd, attr, sizeof attr)`; a non-negative result, or the errno.
fn bpf<T>(cmd: libc::c_int, attr: &mut Padded<T>) -> io::Result<libc::c_long> {
    let size = std::mem::size_of::<Padded<T>>() as libc::c_uint;
    // SAFETY: `attr` is a valid, writable, `repr(C)` buffer of `size`
    // bytes laid out as the kernel's `union bpf_attr` for `cmd`, zero
    // after the fields set; every pointer it holds (instructions,
    // licence, log, ids) points to memory the caller keeps alive and
    // large enough for the sizes given next to it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The cgroup2 directory `dir`, opened as the target of an attach or a query.
fn open_cgroup(dir: &Path) -> Result<File, BpfError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(BpfError::Open)
}

/// Loads `insns` as a `BPF_PROG_TYPE_CGROUP_DEVICE` program. Loads without
/// a log first (cheaper); if the kernel refuses, loads again with one so
/// the error can say why.
fn load(insns: &[Insn]) -> Result<OwnedFd, BpfError> {
    let code: Vec<u64> = insns
        .iter()
        .map(|i| u64::from_ne_bytes(i.to_bytes()))
        .collect();
    let mut prog_name = [0u8; 16];
    prog_name[..NAME.len()].copy_from_slice(NAME);
    let attr = |log: &mut [u8]| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name,
        ..ProgLoadAttr::default()
    };
    let first = bpf(BPF_PROG_LOAD, &mut Padded::new(attr(&mut [])));
    let error = match first {
        Ok(fd) => return Ok(own_fd(fd)),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    let (source, log) = match bpf(BPF_PROG_LOAD, &mut Padded::new(attr(&mut log))) {
        // Refused once, then loaded: use it.
        Ok(fd) => return Ok(own_fd(fd)),
        Err(e) if e.raw_os_error() == error.raw_os_error() => (e, log),
        // Another answer the second time (ENOSPC: the log is too small);
        // the first answer is the one that matters.
        Err(_) => (error, log),
    };
    Err(BpfError::Load {
        log: log_text(&log),
        source,
    })
}

/// The end of a NUL-terminated verifier log, on one line.
fn log_text(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().rev().nth(LOG_KEPT) {
        Some((start, _)) => format!("…{}", &text[start..]),
        None => text,
    }
}

fn own_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor
    // that nothing else owns; it fits an int.
    unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
}

/// Loads `insns` and attaches them to the cgroup2 directory `dir` as a
/// device program (`BPF_F_ALLOW_MULTI`). The attachment holds the program:
/// it goes with the cgroup.
pub fn attach_device_program(dir: &Path, insns: &[Insn]) -> Result<(), BpfError> {
    let cgroup = open_cgroup(dir)?;
    let program = load(insns)?;
    let mut attr = Padded::new(AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..AttachAttr::default()
    });
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(BpfError::Attach)?;
    Ok(())
}

/// Replaces the device programs lxvirt attached to the cgroup2 directory
/// `dir` with one made of `insns` (a running container's allow-list that
/// changed). The new one is attached before the old ones go: programs
/// of one cgroup must all allow an access, so meanwhile only what both
/// lists allow is allowed, never more than either. Programs of other
/// names (another manager's) stay.
pub fn replace_device_program(dir: &Path, insns: &[Insn]) -> Result<(), BpfError> {
    let cgroup = open_cgroup(dir)?;
    let former = attached_programs(&cgroup)?;
    attach_device_program(dir, insns)?;
    for id in former {
        let mut get = Padded::new(GetFdAttr {
            prog_id: id,
            ..GetFdAttr::default()
        });
        let program = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            Ok(fd) => own_fd(fd),
            // Detached meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(BpfError::Query(e)),
        };
        let mut info = [0u8; 128];
        let mut attr = Padded::new(InfoAttr {
            bpf_fd: program.as_raw_fd() as u32,
            info_len: info.len() as u32,
            info: info.as_mut_ptr() as u64,
        });
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(BpfError::Query)?;
        let name = &info[PROG_INFO_NAME];
        if !name.starts_with(NAME) {
            continue;
        }
        let mut detach = Padded::new(AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: program.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..AttachAttr::default()
        });
        bpf(BPF_PROG_DETACH, &mut detach).map_err(BpfError::Detach)?;
    }
    Ok(())
}

/// The ids of the device programs attached to the cgroup `cgroup` itself.
fn attached_programs(cgroup: &File) -> Result<Vec<u32>, BpfError> {
    let mut ids = [0u32; 64];
    let mut attr = Padded::new(QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..QueryAttr::default()
    });
    bpf(BPF_PROG_QUERY, &mut attr).map_err(BpfError::Query)?;
    let count = (attr.attr.prog_cnt as usize).min(ids.len());
    Ok(ids[..count].to_vec())
}

/// How many device programs are attached to the cgroup2 directory `dir`
/// itself (not those of the cgroups above it).
pub fn device_programs(dir: &Path) -> Result<u32, BpfError> {
    let cgroup = open_cgroup(dir)?;
    let mut attr = Padded::new(QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..QueryAttr::default()
    });
    bpf(BPF_PROG_QUERY, &mut attr).map_err(BpfError::Query)?;
    Ok(attr.attr.prog_cnt)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn attributes_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::size_of::<AttachAttr>(), 20);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_ids), 16);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_cnt), 24);
        assert!(NAME.len() < 16);
    }

    /// As root: the kernel's verifier refuses a program that does not end
    /// in `exit`, and the error brings its log and the right hint.
    #[test]
    fn a_refused_program_brings_the_verifier_log() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let mut program = super::super::bpf_devices::compile(&[]);
        program.pop();
        let err = load(&program).unwrap_err();
        eprintln!("{err}");
        let BpfError::Load { log, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
        assert!(log.contains("exit"), "{log}");
        assert!(err.hint().contains("verifier"));
    }

    /// As root: the verifier takes every shape of program the compiler
    /// makes (no check, every check, an early `return 1`, numbers above
    /// 2^31).
    #[test]
    fn the_verifier_takes_the_compiled_programs() {
        use super::super::DeviceRule;
        use super::super::bpf_devices::compile;
        use super::super::domain::base_device_rules;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let rule = |kind, major, minor, access: &str| DeviceRule {
            kind,
            major,
            minor,
            access: access.into(),
        };
        let mut with_all = base_device_rules();
        with_all.push(rule('a', None, None, "rwm"));
        with_all.push(rule('c', Some(1), Some(3), "r"));
        for rules in [
            Vec::new(),
            base_device_rules(),
            with_all,
            vec![rule('a', None, None, "r")],
            vec![rule('c', None, None, "rwm"), rule('b', None, None, "m")],
            vec![rule('b', Some(u32::MAX), Some(1 << 31), "rw")],
        ] {
            load(&compile(&rules)).unwrap_or_else(|e| panic!("{rules:?}: {e}"));
        }
    }

    #[test]
    fn the_verifier_log_is_kept_short_and_on_one_line() {
        assert_eq!(
            log_text(b"0: (61) r2 = *(u32 *)(r1 +0)\nbad\n\0junk"),
            "0: (61) r2 = *(u32 *)(r1 +0) bad"
        );
        let long = "x".repeat(LOG_SIZE);
        let kept = log_text(long.as_bytes());
        assert!(kept.starts_with('…'));
        assert_eq!(kept.chars().count(), LOG_KEPT + 2);
    }
}
