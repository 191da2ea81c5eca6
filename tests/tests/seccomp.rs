//! The seccomp filter seen from inside real containers, through the real
//! daemon: a small static probe (compiled here with `cc -static`) makes
//! the blocked calls and prints what each returned. Needs root and a C
//! compiler with a static libc; says so and returns otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use lxvirt_tests::{ContainerEnv, wait_for_file};

/// Makes each call the default filter should block, with arguments that
/// are harmless if it does not: `settimeofday(NULL, NULL)` sets nothing
/// (but needs CAP_SYS_TIME), `CLOCK_MONOTONIC` cannot be set (EINVAL
/// without a filter), the key goes to the probe's own process keyring,
/// the tmpfs into the container's own mount namespace.
const PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc < 0) printf("%s=%s\n", name, strerrorname_np(errno));
    else printf("%s=ok\n", name);
}

int main(void) {
    struct timespec ts = {0, 0};
    char params[120];
    struct utsname u;
    memset(params, 0, sizeof params);
    report("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
    report("clock_settime", syscall(SYS_clock_settime, CLOCK_MONOTONIC, &ts));
    report("add_key", syscall(SYS_add_key, "user", "lxvirt-probe", "x", 1, -2));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    report("personality", syscall(SYS_personality, 0xffffffffUL));
    report("personality_rie", syscall(SYS_personality, 0x0400000UL));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    report("x32_getpid", syscall(0x40000000 | SYS_getpid));
    mkdir("/tmp/probe-mnt", 0755);
    report("mount", syscall(SYS_mount, "none", "/tmp/probe-mnt", "tmpfs", 0, NULL));
    report("uname", syscall(SYS_uname, &u));
    printf("done\n");
    return 0;
}
"#;

/// Keep CAP_SYS_TIME, which libvirt's default policy drops, and host root
/// (no user namespace, where CAP_SYS_TIME would not count): the filter
/// must block clock setting even then, and the mount family.
const KEEP_SYS_TIME: &str = "<features><capabilities policy='default'><sys_time state='on'/></capabilities></features>\
     <lxvirt:userns mode='host'/>";

type Env = ContainerEnv;

/// The probe's report: call → `ok` or the errno's name.
fn parse(report: &str) -> BTreeMap<String, String> {
    assert!(
        report.contains("done"),
        "the probe did not finish: {report}"
    );
    report
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Waits for the file init writes (seen from the host through init's root).
async fn init_report(pid: u32, path: &str) -> BTreeMap<String, String> {
    let file = PathBuf::from(format!("/proc/{pid}/root{path}"));
    parse(&wait_for_file(&file, "done").await.unwrap())
}

/// `Seccomp` and `Seccomp_filters` of /proc/PID/status.
fn seccomp_status(status: &str) -> (String, String) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    (field("Seccomp:"), field("Seccomp_filters:"))
}

fn expect(report: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (call, result) in expected {
        assert_eq!(
            report.get(*call).map(String::as_str),
            Some(*result),
            "{call}: {report:?}"
        );
    }
}

/// What the default filter returns, in a container without a user
/// namespace (the mount family blocked too).
const DEFAULT_BLOCKED: &[(&str, &str)] = &[
    ("settimeofday", "EPERM"),
    ("clock_settime", "EPERM"),
    ("add_key", "EPERM"),
    ("keyctl", "EPERM"),
    ("personality", "ok"),
    ("personality_rie", "EPERM"),
    ("io_uring_setup", "ENOSYS"),
    ("x32_getpid", "ENOSYS"),
    ("mount", "EPERM"),
    ("uname", "ok"),
];

#[tokio::test]
async fn init_runs_under_the_default_filter() {
    let Some(env) = Env::with_probe(PROBE).await else {
        return;
    };
    let web = env
        .start(
            "web",
            "/probe > /tmp/init.report; exec sleep 1000",
            KEEP_SYS_TIME,
        )
        .await;
    let pid = web.pid().await.unwrap();
    let report = init_report(pid, "/tmp/init.report").await;
    expect(&report, DEFAULT_BLOCKED);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        seccomp_status(&status),
        ("2".to_owned(), "1".to_owned()),
        "init: mode 2 (filter), one filter"
    );
    web.destroy().await.unwrap();
}

#[tokio::test]
async fn entered_processes_get_the_same_filter() {
    let Some(env) = Env::with_probe(PROBE).await else {
        return;
    };
    let web = env.start("web", "exec sleep 1000", KEEP_SYS_TIME).await;
    let (code, out) = env.enter(&web, &["/probe"]).await;
    assert_eq!(code, 0, "{out}");
    expect(&parse(&out), DEFAULT_BLOCKED);
    let (_, status) = env.enter(&web, &["cat", "/proc/self/status"]).await;
    assert_eq!(seccomp_status(&status), ("2".to_owned(), "1".to_owned()));
    let (code, out) = env.enter(&web, &["busybox", "uname"]).await;
    assert_eq!((code, out.trim()), (0, "Linux"));
    web.destroy().await.unwrap();
}

#[tokio::test]
async fn the_filter_goes_in_when_init_loses_sys_admin() {
    // Without CAP_SYS_ADMIN and without no_new_privs the kernel refuses a
    // filter: it must go in before the capabilities are dropped.
    let Some(env) = Env::with_probe(PROBE).await else {
        return;
    };
    let web = env
        .start(
            "nosysadmin",
            "/probe > /tmp/nosysadmin.report; exec sleep 1000",
            "<features><capabilities policy='default'><sys_admin state='off'/></capabilities></features>",
        )
        .await;
    let pid = web.pid().await.unwrap();
    let report = init_report(pid, "/tmp/nosysadmin.report").await;
    expect(&report, &[("keyctl", "EPERM"), ("uname", "ok")]);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(seccomp_status(&status), ("2".to_owned(), "1".to_owned()));
    let (code, out) = env.enter(&web, &["/probe"]).await;
    assert_eq!(code, 0, "{out}");
    expect(&parse(&out), &[("keyctl", "EPERM"), ("uname", "ok")]);
    web.destroy().await.unwrap();
}

#[tokio::test]
async fn a_user_namespace_may_mount() {
    // The kernel's own rules for mounts in a user namespace (the default)
    // apply; the rest of the default filter stays.
    let Some(env) = Env::with_probe(PROBE).await else {
        return;
    };
    let web = env.start("mapped", "exec sleep 1000", "").await;
    let (code, out) = env.enter(&web, &["/probe"]).await;
    assert_eq!(code, 0, "{out}");
    let mut expected = DEFAULT_BLOCKED.to_vec();
    expected.retain(|(call, _)| *call != "mount" && *call != "settimeofday");
    expected.push(("mount", "ok"));
    expect(&parse(&out), &expected);
    let pid = web.pid().await.unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(seccomp_status(&status), ("2".to_owned(), "1".to_owned()));
    web.destroy().await.unwrap();
}

#[tokio::test]
async fn a_domain_can_turn_the_filter_off() {
    let Some(env) = Env::with_probe(PROBE).await else {
        return;
    };
    let web = env
        .start(
            "off",
            "exec sleep 1000",
            &format!("{KEEP_SYS_TIME}<lxvirt:seccomp mode='off'/>"),
        )
        .await;
    let pid = web.pid().await.unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(seccomp_status(&status), ("0".to_owned(), "0".to_owned()));
    let (_, status) = env.enter(&web, &["cat", "/proc/self/status"]).await;
    assert_eq!(seccomp_status(&status), ("0".to_owned(), "0".to_owned()));
    // With CAP_SYS_TIME and no filter, the harmless settimeofday(NULL,
    // NULL) succeeds: the EPERM of the other tests is the filter's.
    let (code, out) = env.enter(&web, &["/probe"]).await;
    assert_eq!(code, 0, "{out}");
    expect(
        &parse(&out),
        &[
            ("settimeofday", "ok"),
            ("clock_settime", "EINVAL"),
            ("keyctl", "ok"),
            ("uname", "ok"),
        ],
    );
    web.destroy().await.unwrap();
}

#[tokio::test]
async fn a_domain_can_block_more() {
    let Some(env) = Env::with_probe(PROBE).await else {
        return;
    };
    let web = env
        .start(
            "more",
            "/probe > /tmp/more.report; exec sleep 1000",
            "<lxvirt:seccomp mount='allow'><lxvirt:deny syscall='uname'/></lxvirt:seccomp>",
        )
        .await;
    let pid = web.pid().await.unwrap();
    let report = init_report(pid, "/tmp/more.report").await;
    expect(
        &report,
        &[("uname", "EPERM"), ("keyctl", "EPERM"), ("mount", "ok")],
    );
    let (code, out) = env.enter(&web, &["/probe"]).await;
    assert_eq!(code, 0, "{out}");
    expect(&parse(&out), &[("uname", "EPERM"), ("keyctl", "EPERM")]);
    // busybox's uname ignores the error and prints an empty name.
    let (_, out) = env.enter(&web, &["busybox", "uname"]).await;
    assert_eq!(out.trim(), "", "{out:?}");
    web.destroy().await.unwrap();
}
