//! What a VM counts beyond its cgroup: qemu's balloon and disks over
//! QMP, its taps' traffic from the host.

use std::sync::Arc;

use super::link::{Link, QMP_TIMEOUT};
use super::qmp::BlockStats;

/// What qemu counts: the balloon, and each disk's traffic (named by its
/// device: `disk-vda` reads as `vda`). Missing when QMP does not answer.
pub(super) async fn qmp_counters(link: &Arc<Link>) -> Vec<(String, u64)> {
    let Ok(qmp) = link.qmp().await else {
        return Vec::new();
    };
    let mut counters = Vec::new();
    if let Ok(Ok(Some(balloon))) = tokio::time::timeout(QMP_TIMEOUT, qmp.query_balloon()).await {
        counters.push(("balloon.current".to_owned(), balloon.actual));
    }
    if let Ok(Ok(blocks)) = tokio::time::timeout(QMP_TIMEOUT, qmp.query_blockstats()).await {
        for block in blocks {
            let Some(name) = block_name(&block) else {
                continue;
            };
            let s = block.stats;
            for (what, value) in [
                ("rd.bytes", s.rd_bytes),
                ("wr.bytes", s.wr_bytes),
                ("rd.reqs", s.rd_operations),
                ("wr.reqs", s.wr_operations),
            ] {
                counters.push((format!("block.{name}.{what}"), value));
            }
        }
    }
    counters
}

/// A disk's name in the statistics: its device id without the `disk-`
/// the command line puts before the target (an `<alias>` as it is).
fn block_name(block: &BlockStats) -> Option<String> {
    let qdev = block.qdev.as_deref().filter(|q| !q.is_empty())?;
    // A QOM path: /machine/peripheral/ID/virtio-backend.
    let id = qdev
        .strip_prefix("/machine/peripheral/")
        .map_or(qdev, |rest| rest.split('/').next().unwrap_or(rest));
    Some(id.strip_prefix("disk-").unwrap_or(id).to_owned())
}

/// Each tap qemu holds (its `/proc/PID/fdinfo` names them), counted from
/// the guest's side: what the tap sends, the guest receives.
pub(super) fn tap_counters(qemu: i32) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{qemu}/fdinfo")) else {
        return Vec::new();
    };
    let mut taps: Vec<String> = entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("iff:"))
                .map(|name| name.trim().to_owned())
        })
        .collect();
    taps.sort();
    taps.dedup();
    let read = |tap: &str, counter: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/{counter}"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let mut counters = Vec::new();
    for tap in &taps {
        for (what, counter) in [
            ("rx.bytes", "tx_bytes"),
            ("rx.packets", "tx_packets"),
            ("tx.bytes", "rx_bytes"),
            ("tx.packets", "rx_packets"),
        ] {
            if let Some(value) = read(tap, counter) {
                counters.push((format!("net.{tap}.{what}"), value));
            }
        }
    }
    counters
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn disks_are_named_by_target_or_alias() {
        let block = |qdev: &str| BlockStats {
            device: String::new(),
            node_name: None,
            qdev: Some(qdev.to_owned()),
            stats: Default::default(),
        };
        assert_eq!(
            block_name(&block("/machine/peripheral/disk-vda/virtio-backend")).as_deref(),
            Some("vda")
        );
        assert_eq!(block_name(&block("disk-sda")).as_deref(), Some("sda"));
        assert_eq!(block_name(&block("ua-data")).as_deref(), Some("ua-data"));
        assert_eq!(block_name(&block("")), None);
    }
}
