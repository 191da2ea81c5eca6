//! `lxvirt domstats` of a running container: memory by kind, CPU time by
//! mode, tasks, block I/O where the host's cgroups count it, and the
//! counters of its interfaces, read back as JSON; traffic inside shows in
//! them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use lxvirt_tests::{ContainerEnv, lxvirt_said};

fn stats(env: &ContainerEnv, name: &str) -> serde_json::Value {
    let (ok, out) = lxvirt_said(&env.bus.address, &["-o", "json", "domstats", name]);
    assert!(ok, "{out}");
    serde_json::from_str(&out).unwrap()
}

fn number(stats: &serde_json::Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {stats}"))
}

#[tokio::test]
async fn domstats_shows_memory_cpu_tasks_and_interface_counters() {
    let Some(env) = ContainerEnv::new().await else {
        return;
    };
    // An interface whose host end stays unattached (type='ethernet').
    let xml = env
        .busybox_xml(
            "busy",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 100000",
            "",
        )
        .replace(
            "<console type='pty'/>",
            "<interface type='ethernet'><target dev='lxvst9'/></interface><console type='pty'/>",
        );
    env.define_and_start(&xml).await;
    // Busy for a moment: wait until its loop is done (the CPU time stops).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let first = stats(&env, "busy");
    assert!(number(&first, "memory.current") > 0, "{first}");
    assert!(number(&first, "memory.anon") > 0, "{first}");
    let cpu = number(&first, "cpu.time");
    assert!(cpu > 0, "{first}");
    assert!(number(&first, "cpu.user") + number(&first, "cpu.system") <= cpu + 20_000_000);
    assert!(number(&first, "pids.current") >= 1, "{first}");
    // Its interface as it sees it (eth0), not loopback.
    for counter in ["rx.bytes", "rx.packets", "tx.bytes", "tx.dropped"] {
        number(&first, &format!("net.eth0.{counter}"));
    }
    assert!(first.get("net.lo.rx.bytes").is_none(), "{first}");

    // The text form names every figure on a line.
    let (ok, text) = lxvirt_said(&env.bus.address, &["domstats", "busy"]);
    assert!(ok, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("memory.anon ")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("cpu.user ")), "{text}");
}
