//! The default deny list, per-domain policies and their compilation to a
//! BPF program. docs/seccomp.md explains each class.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::bpf::{ARCH, ARG0_LOW, Action, NR, SockFilter};
use super::{SeccompError, arch};
use crate::domain::syscalls;

/// A group of syscalls the default filter blocks, for one reason.
#[derive(Debug, Clone, Copy)]
pub struct Class {
    pub name: &'static str,
    pub syscalls: &'static [u32],
    /// The errno the blocked calls fail with.
    pub errno: u16,
}

const EPERM: u16 = libc::EPERM as u16;
const ENOSYS: u16 = libc::ENOSYS as u16;

macro_rules! nrs {
    ($($sys:ident),* $(,)?) => {
        &[$(libc::$sys as u32),*]
    };
}

/// The classes every default filter blocks.
pub const DEFAULT_CLASSES: &[Class] = &[
    Class {
        name: "kernel modules",
        syscalls: nrs![SYS_init_module, SYS_finit_module, SYS_delete_module],
        errno: EPERM,
    },
    Class {
        name: "kexec",
        syscalls: nrs![SYS_kexec_load, SYS_kexec_file_load],
        errno: EPERM,
    },
    Class {
        name: "kernel keyrings",
        syscalls: nrs![SYS_add_key, SYS_request_key, SYS_keyctl],
        errno: EPERM,
    },
    Class {
        name: "kernel programs and tracing",
        syscalls: nrs![SYS_bpf, SYS_perf_event_open],
        errno: EPERM,
    },
    Class {
        name: "system clock",
        syscalls: nrs![
            SYS_clock_settime,
            SYS_clock_adjtime,
            SYS_settimeofday,
            SYS_adjtimex
        ],
        errno: EPERM,
    },
    Class {
        name: "swap",
        syscalls: nrs![SYS_swapon, SYS_swapoff],
        errno: EPERM,
    },
    Class {
        name: "process accounting",
        syscalls: nrs![SYS_acct],
        errno: EPERM,
    },
    Class {
        name: "file handles",
        syscalls: nrs![SYS_open_by_handle_at],
        errno: EPERM,
    },
    Class {
        name: "I/O ports",
        syscalls: arch::IO_PORTS,
        errno: EPERM,
    },
    Class {
        name: "kernel log",
        syscalls: nrs![SYS_syslog],
        errno: EPERM,
    },
    Class {
        name: "disk quotas",
        syscalls: nrs![SYS_quotactl, SYS_quotactl_fd],
        errno: EPERM,
    },
    Class {
        name: "obsolete interfaces",
        syscalls: nrs![SYS_lookup_dcookie, SYS_nfsservctl],
        errno: EPERM,
    },
    Class {
        name: "userfaultfd",
        syscalls: nrs![SYS_userfaultfd],
        errno: EPERM,
    },
    Class {
        name: "io_uring",
        syscalls: nrs![
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register
        ],
        errno: ENOSYS,
    },
];

/// The mount family: blocked by default only for containers without a
/// user namespace (see [`Policy::deny_mount`]).
pub const MOUNT_CLASS: Class = Class {
    name: "mounts",
    syscalls: &[
        libc::SYS_mount as u32,
        libc::SYS_umount2 as u32,
        libc::SYS_pivot_root as u32,
        libc::SYS_fsopen as u32,
        libc::SYS_fsconfig as u32,
        libc::SYS_fsmount as u32,
        libc::SYS_fspick as u32,
        libc::SYS_move_mount as u32,
        libc::SYS_open_tree as u32,
        syscalls::OPEN_TREE_ATTR,
        libc::SYS_mount_setattr as u32,
    ],
    errno: EPERM,
};

/// personality(2) values allowed (its argument's low 32 bits; the kernel
/// ignores the rest): the query, plain Linux, the 32-bit and 2.6-uname
/// variants and ASLR off (gdb, `setarch -R`; the kernel clears it on a
/// setuid exec). Everything else — other execution domains,
/// `READ_IMPLIES_EXEC`, `MMAP_PAGE_ZERO`, … — fails with EPERM.
pub const PERSONALITIES: &[u32] = &[
    0xffff_ffff,
    PER_LINUX,
    PER_LINUX32,
    UNAME26,
    UNAME26 | PER_LINUX32,
    ADDR_NO_RANDOMIZE,
    ADDR_NO_RANDOMIZE | PER_LINUX32,
];
// <linux/personality.h>
const PER_LINUX: u32 = 0;
const PER_LINUX32: u32 = 0x0008;
const UNAME26: u32 = libc::UNAME26 as u32;
const ADDR_NO_RANDOMIZE: u32 = libc::ADDR_NO_RANDOMIZE as u32;

/// The filter of one container: the default classes, the mount family
/// when asked, and the domain's own additions (EPERM).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Block [`MOUNT_CLASS`] too.
    pub deny_mount: bool,
    /// Syscall numbers the domain adds, sorted and without duplicates.
    extra: Vec<u32>,
}

impl Policy {
    /// A policy adding the syscalls `names` (all must exist on this
    /// architecture; the error lists every unknown one).
    pub fn new(deny_mount: bool, names: &[String]) -> Result<Policy, SeccompError> {
        let mut unknown = Vec::new();
        let mut extra = Vec::with_capacity(names.len());
        for name in names {
            match syscalls::number(name) {
                Some(nr) => extra.push(nr),
                None => unknown.push(name.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(SeccompError::UnknownSyscalls {
                names: unknown,
                arch: arch::NAME,
            });
        }
        extra.sort_unstable();
        extra.dedup();
        Ok(Policy { deny_mount, extra })
    }

    /// Every blocked syscall and what it returns, by number. The default
    /// classes win over the domain's additions for a syscall in both.
    pub fn rules(&self) -> BTreeMap<u32, Action> {
        let mut rules = BTreeMap::new();
        let classes = DEFAULT_CLASSES
            .iter()
            .chain(self.deny_mount.then_some(&MOUNT_CLASS));
        for class in classes {
            for &nr in class.syscalls {
                rules.entry(nr).or_insert(Action::Errno(class.errno));
            }
        }
        for &nr in &self.extra {
            rules.entry(nr).or_insert(Action::Errno(EPERM));
        }
        rules
    }

    /// The BPF program. Without additions it is compiled once per process
    /// and borrowed from then on.
    pub fn program(&self) -> Result<Cow<'static, [SockFilter]>, SeccompError> {
        static DEFAULT: LazyLock<[Result<Vec<SockFilter>, SeccompError>; 2]> =
            LazyLock::new(|| {
                [false, true].map(|deny_mount| {
                    compile(&Policy {
                        deny_mount,
                        extra: Vec::new(),
                    })
                })
            });
        if self.extra.is_empty() {
            match &DEFAULT[usize::from(self.deny_mount)] {
                Ok(program) => Ok(Cow::Borrowed(program)),
                Err(e) => Err(e.clone()),
            }
        } else {
            compile(self).map(Cow::Owned)
        }
    }
}

/// The program: kill a process calling through another architecture's
/// entry, refuse x32 numbers, then one compare-and-return per blocked
/// syscall, the personality argument check, and allow the rest.
///
/// A linear chain is enough: the kernel (5.11 and later) runs the filter
/// once per syscall number at load time and skips it for every syscall
/// whose verdict cannot depend on the arguments, which is all of them but
/// personality.
pub fn compile(policy: &Policy) -> Result<Vec<SockFilter>, SeccompError> {
    let audit_arch = arch::AUDIT_ARCH.ok_or(SeccompError::UnsupportedArch(arch::NAME))?;
    let rules = policy.rules();
    let mut program = Vec::with_capacity(2 * rules.len() + PERSONALITIES.len() + 10);
    program.extend([
        SockFilter::load(ARCH),
        SockFilter::jeq(audit_arch, 1, 0),
        SockFilter::ret(Action::KillProcess),
        SockFilter::load(NR),
    ]);
    if let Some(bit) = arch::X32_SYSCALL_BIT {
        // As a kernel built without x32 support answers.
        program.extend([
            SockFilter::jge(bit, 0, 1),
            SockFilter::ret(Action::Errno(ENOSYS)),
        ]);
    }
    for (&nr, &action) in &rules {
        program.extend([SockFilter::jeq(nr, 0, 1), SockFilter::ret(action)]);
    }
    let personality = libc::SYS_personality as u32;
    if !rules.contains_key(&personality) {
        // PERSONALITIES has a handful of entries: the jumps fit in u8.
        let n = PERSONALITIES.len() as u8;
        program.push(SockFilter::jeq(personality, 0, n + 3));
        program.push(SockFilter::load(ARG0_LOW));
        for (i, &value) in (0u8..).zip(PERSONALITIES) {
            // Skip the remaining compares and the EPERM return.
            program.push(SockFilter::jeq(value, n - i, 0));
        }
        program.push(SockFilter::ret(Action::Errno(EPERM)));
        program.push(SockFilter::ret(Action::Allow));
    }
    program.push(SockFilter::ret(Action::Allow));
    let max = libc::BPF_MAXINSNS as usize;
    if program.len() > max {
        return Err(SeccompError::TooLarge {
            len: program.len(),
            max,
        });
    }
    Ok(program)
}
