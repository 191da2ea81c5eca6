//! The programs, run through the interpreter.

use super::interp::{Call, run};
use super::*;

const EPERM: Action = Action::Errno(libc::EPERM as u16);
const ENOSYS: Action = Action::Errno(libc::ENOSYS as u16);

fn nr(name: &str) -> u32 {
    syscall_number(name).unwrap_or_else(|| panic!("no syscall {name}"))
}

fn verdict(program: &[SockFilter], name: &str) -> Action {
    run(program, Call::native(nr(name)))
}

fn default_program(deny_mount: bool) -> Vec<SockFilter> {
    Policy::new(deny_mount, &[])
        .unwrap()
        .program()
        .unwrap()
        .into_owned()
}

#[test]
fn default_blocks_each_class_and_allows_the_rest() {
    let program = default_program(false);
    for name in [
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "add_key",
        "request_key",
        "keyctl",
        "bpf",
        "perf_event_open",
        "clock_settime",
        "clock_adjtime",
        "settimeofday",
        "adjtimex",
        "swapon",
        "swapoff",
        "acct",
        "open_by_handle_at",
        "syslog",
        "quotactl",
        "quotactl_fd",
        "lookup_dcookie",
        "nfsservctl",
        "userfaultfd",
    ] {
        assert_eq!(verdict(&program, name), EPERM, "{name}");
    }
    #[cfg(target_arch = "x86_64")]
    for name in ["iopl", "ioperm"] {
        assert_eq!(verdict(&program, name), EPERM, "{name}");
    }
    for name in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert_eq!(verdict(&program, name), ENOSYS, "{name}");
    }
    for name in [
        "read",
        "write",
        "openat",
        "execve",
        "clone",
        "clone3",
        "unshare",
        "setns",
        "reboot",
        "ptrace",
        "kcmp",
        "name_to_handle_at",
        "clock_gettime",
        "uname",
        "sethostname",
        "mount",
        "umount2",
        "fsopen",
        "move_mount",
        "open_tree_attr",
        "pivot_root",
        "chroot",
        "seccomp",
        "prctl",
    ] {
        assert_eq!(verdict(&program, name), Action::Allow, "{name}");
    }
}

#[test]
fn mount_family_only_when_asked() {
    let program = default_program(true);
    for &nr in MOUNT_CLASS.syscalls {
        assert_eq!(
            run(&program, Call::native(nr)),
            EPERM,
            "{:?}",
            syscall_name(nr)
        );
    }
    assert_eq!(verdict(&program, "chroot"), Action::Allow);
    assert_eq!(verdict(&program, "keyctl"), EPERM);
}

#[test]
fn foreign_architectures_are_killed_and_x32_refused() {
    let program = default_program(false);
    // AUDIT_ARCH_I386 and AUDIT_ARCH_ARM: the 32-bit entries a 64-bit
    // kernel offers, with their own syscall numbers.
    for foreign in [0x4000_0003, 0x4000_0028] {
        let call = Call {
            arch: foreign,
            ..Call::native(nr("read"))
        };
        assert_eq!(run(&program, call), Action::KillProcess);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let x32 = 0x4000_0000;
        for name in ["read", "keyctl", "init_module"] {
            assert_eq!(run(&program, Call::native(x32 | nr(name))), ENOSYS);
        }
        // The x32 numbers of their own (512…547), and any above.
        assert_eq!(run(&program, Call::native(x32 | 520)), ENOSYS);
        assert_eq!(run(&program, Call::native(u32::MAX)), ENOSYS);
    }
}

#[test]
fn personality_allows_only_the_harmless_values() {
    let program = default_program(false);
    let call = |persona: u64| Call {
        args: [persona, 0, 0, 0, 0, 0],
        ..Call::native(nr("personality"))
    };
    for &allowed in PERSONALITIES {
        assert_eq!(
            run(&program, call(allowed.into())),
            Action::Allow,
            "{allowed:#x}"
        );
    }
    // The kernel reads an unsigned int: the high half does not matter.
    assert_eq!(run(&program, call(0xdead_0000_0000_0000)), Action::Allow);
    // READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, PER_SVR4, PER_BSD.
    for denied in [0x0040_0000u64, 0x0010_0000, 0x0400_0001, 0x0006] {
        assert_eq!(run(&program, call(denied)), EPERM, "{denied:#x}");
    }
}

#[test]
fn additions_are_appended_and_the_default_stays_cached() {
    let policy = Policy::new(false, &["uname".into(), "keyctl".into(), "uname".into()]).unwrap();
    let program = policy.program().unwrap();
    assert!(matches!(program, std::borrow::Cow::Owned(_)));
    assert_eq!(verdict(&program, "uname"), EPERM);
    assert_eq!(verdict(&program, "keyctl"), EPERM);
    assert_eq!(verdict(&program, "read"), Action::Allow);
    let default = default_program(false);
    assert_eq!(
        program.len(),
        default.len() + 2,
        "one rule more, keyctl once"
    );

    let cached = Policy::default().program().unwrap();
    assert!(matches!(cached, std::borrow::Cow::Borrowed(_)));
    assert!(std::ptr::eq(
        cached.as_ptr(),
        Policy::default().program().unwrap().as_ptr()
    ));

    // A domain blocking personality outright wins over the argument check.
    let policy = Policy::new(false, &["personality".into()]).unwrap();
    let program = policy.program().unwrap();
    assert_eq!(verdict(&program, "personality"), EPERM);
}

#[test]
fn unknown_names_are_all_reported() {
    let err = Policy::new(
        false,
        &["uname".into(), "frobnicate".into(), "SYS_read".into()],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unknown syscall 'frobnicate', 'SYS_read' on {}; use the kernel's name, such as 'uname' or 'keyctl'",
            std::env::consts::ARCH
        )
    );
}

#[test]
fn every_jump_lands_inside_the_program() {
    let names: Vec<String> = ["uname", "getpid", "sync"].map(String::from).to_vec();
    for program in [
        default_program(false),
        default_program(true),
        Policy::new(true, &names)
            .unwrap()
            .program()
            .unwrap()
            .into_owned(),
    ] {
        for (pc, insn) in program.iter().enumerate() {
            if insn.code == SockFilter::ret(Action::Allow).code {
                continue;
            }
            let reach = pc + 1 + usize::from(insn.jt.max(insn.jf));
            assert!(reach < program.len(), "jump at {pc} leaves the program");
        }
        assert_eq!(program.last(), Some(&SockFilter::ret(Action::Allow)));
    }
}

#[test]
fn placement_follows_what_the_kernel_requires() {
    let sys_admin = 1u64 << 21;
    assert_eq!(placement(true, 1000, 0), Placement::BeforeExec);
    assert_eq!(placement(false, 0, sys_admin), Placement::BeforeExec);
    assert_eq!(placement(false, 0, !sys_admin), Placement::BeforeIdentity);
    assert_eq!(placement(false, 1000, sys_admin), Placement::BeforeIdentity);
}

/// Prints the build time; `cargo test -p lxvirtd --lib seccomp::tests::build_time -- --nocapture`.
#[test]
fn build_time() {
    let names: Vec<String> = ["uname", "getpid"].map(String::from).to_vec();
    let rounds = 1000u32;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let program = compile(&Policy::new(false, &[]).unwrap()).unwrap();
        std::hint::black_box(program);
    }
    let default = start.elapsed() / rounds;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let program = Policy::new(true, &names).unwrap().program().unwrap();
        std::hint::black_box(program);
    }
    let extended = start.elapsed() / rounds;
    eprintln!(
        "seccomp filter build: default {default:?}, with mounts and two additions {extended:?} ({} instructions)",
        default_program(false).len()
    );
    // Generous for a debug build on a loaded machine; it is microseconds.
    assert!(default < std::time::Duration::from_millis(5));
}
