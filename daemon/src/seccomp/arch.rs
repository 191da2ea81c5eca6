//! What differs between architectures: the audit architecture a filter
//! checks, the x32 syscall bit on x86_64, syscalls only some architectures
//! have. One module per supported architecture; any other architecture
//! gets a stub whose `AUDIT_ARCH` is `None`, and building a filter there
//! fails with a clear error instead of a filter that checks nothing.

/// `__AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` of `<linux/audit.h>`.
#[allow(dead_code)] // not on unsupported architectures
const AUDIT_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;

#[cfg(target_arch = "x86_64")]
mod imp {
    use crate::seccomp::syscalls::syscall_table;

    pub const NAME: &str = "x86_64";
    /// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) of `<linux/elf-em.h>`.
    pub const AUDIT_ARCH: Option<u32> = Some(62 | super::AUDIT_64BIT_LE);
    /// `__X32_SYSCALL_BIT`: x32 syscalls come in through the x86_64 entry
    /// with this bit set in the number and the same `AUDIT_ARCH`, so a
    /// filter must look at it or x32 numbers slip past every rule.
    pub const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);

    /// Syscalls x86_64 has and the generic table lacks.
    pub const SYSCALLS: &[(&str, u32)] = syscall_table![
        SYS__sysctl,
        SYS_access,
        SYS_afs_syscall,
        SYS_alarm,
        SYS_arch_prctl,
        SYS_chmod,
        SYS_chown,
        SYS_creat,
        SYS_dup2,
        SYS_epoll_create,
        SYS_epoll_ctl_old,
        SYS_epoll_wait,
        SYS_epoll_wait_old,
        SYS_eventfd,
        SYS_fchmodat2,
        SYS_fork,
        SYS_futimesat,
        SYS_get_thread_area,
        SYS_getdents,
        SYS_getpgrp,
        SYS_getpmsg,
        SYS_getrlimit,
        SYS_inotify_init,
        SYS_ioperm,
        SYS_iopl,
        SYS_lchown,
        SYS_link,
        SYS_lstat,
        SYS_mkdir,
        SYS_mknod,
        SYS_modify_ldt,
        SYS_open,
        SYS_pause,
        SYS_pipe,
        SYS_poll,
        SYS_putpmsg,
        SYS_readlink,
        SYS_rename,
        SYS_renameat,
        SYS_rmdir,
        SYS_security,
        SYS_select,
        SYS_set_thread_area,
        SYS_setrlimit,
        SYS_signalfd,
        SYS_stat,
        SYS_symlink,
        SYS_sync_file_range,
        SYS_sysfs,
        SYS_time,
        SYS_tuxcall,
        SYS_unlink,
        SYS_uselib,
        SYS_ustat,
        SYS_utime,
        SYS_utimes,
        SYS_vfork,
        SYS_vserver,
    ];

    /// Direct access to I/O ports.
    pub const IO_PORTS: &[u32] = &[libc::SYS_iopl as u32, libc::SYS_ioperm as u32];
}

#[cfg(target_arch = "aarch64")]
mod imp {
    pub const NAME: &str = "aarch64";
    /// `AUDIT_ARCH_AARCH64`: `EM_AARCH64` (183) of `<linux/elf-em.h>`.
    pub const AUDIT_ARCH: Option<u32> = Some(183 | super::AUDIT_64BIT_LE);
    pub const X32_SYSCALL_BIT: Option<u32> = None;
    pub const SYSCALLS: &[(&str, u32)] = &[];
    pub const IO_PORTS: &[u32] = &[];
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    pub const NAME: &str = std::env::consts::ARCH;
    pub const AUDIT_ARCH: Option<u32> = None;
    pub const X32_SYSCALL_BIT: Option<u32> = None;
    pub const SYSCALLS: &[(&str, u32)] = &[];
    pub const IO_PORTS: &[u32] = &[];
}

pub use imp::*;
