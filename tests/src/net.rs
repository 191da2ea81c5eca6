//! Helpers of the networking tests: host devices the tests make (named
//! `lxvt…`, removed on drop), `ip` on the host, busybox containers with
//! interfaces. Packets only go between namespaces the tests make.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;
use std::time::{Duration, Instant};

use lxvirtd::dbus::proxy::DomainProxy;

use crate::ContainerEnv;

/// Busybox applets these tests use inside, beyond the common ones.
pub const NET_APPLETS: [&str; 6] = ["ip", "ping", "nc", "udhcpc", "nslookup", "arping"];

/// Host devices a test made; deleted on drop (a veth takes its peer, a
/// bridge releases its ports).
#[derive(Debug, Default)]
pub struct HostDevices(Vec<String>);

impl HostDevices {
    pub fn new() -> HostDevices {
        HostDevices(Vec::new())
    }

    /// `ip link add NAME ARGS…`, then up.
    /// Deletes `name` on drop (a device a container made, say).
    pub fn adopt(&mut self, name: &str) {
        self.0.push(name.to_owned());
    }

    pub fn add(&mut self, name: &str, args: &[&str]) {
        let _ = ip(&["link", "del", name]);
        let mut all = vec!["link", "add", name];
        all.extend_from_slice(args);
        let out = ip(&all);
        assert!(out.0, "ip link add {name}: {}", out.1);
        self.0.push(name.to_owned());
        set_up(name);
    }
}

impl Drop for HostDevices {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let _ = ip(&["link", "del", name]);
        }
    }
}

pub fn set_up(name: &str) {
    let out = ip(&["link", "set", name, "up"]);
    assert!(out.0, "ip link set {name} up: {}", out.1);
}

/// `ip ARGS…` on the host: (success, stdout and stderr).
pub fn ip(args: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

pub fn host_link_exists(name: &str) -> bool {
    ip(&["-o", "link", "show", "dev", name]).0
}

/// The names of the bridge's ports on the host.
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let (_, text) = ip(&["-o", "link", "show", "master", bridge]);
    text.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn env() -> Option<ContainerEnv> {
    env_with(&[]).await
}

/// As [`env`], the daemon given `extra` arguments.
pub async fn env_with(extra: &[&str]) -> Option<ContainerEnv> {
    let env = ContainerEnv::with_daemon_args(extra).await?;
    for applet in NET_APPLETS {
        let _ = std::os::unix::fs::symlink("busybox", env.rootfs().join("bin").join(applet));
    }
    Some(env)
}

/// A busybox domain that sleeps, with `devices` before its console.
pub fn xml(env: &ContainerEnv, name: &str, devices: &str) -> String {
    env.busybox_xml(name, "sleep 1000", "").replace(
        "<console type='pty'/>",
        &format!("{devices}<console type='pty'/>"),
    )
}

pub async fn define(env: &ContainerEnv, xml: &str) -> DomainProxy<'static> {
    let manager = env.manager().await.unwrap();
    env.domain(manager.define_xml(xml).await.unwrap())
        .await
        .unwrap()
}

/// Runs `argv` inside; panics with its output unless it succeeds.
pub async fn inside(env: &ContainerEnv, domain: &DomainProxy<'_>, argv: &[&str]) -> String {
    let (code, out) = env.enter(domain, argv).await;
    assert_eq!(code, 0, "{argv:?} inside: {out}");
    out
}

/// The ifb devices of a domain's outbound shaping, found by their alias
/// (which names the domain's UUID); deleted on drop, should a failing
/// test leave them.
#[derive(Debug)]
pub struct DomainIfbs(String);

impl DomainIfbs {
    /// Those of the domain whose UUID is `uuid`.
    pub fn of(uuid: &str) -> DomainIfbs {
        DomainIfbs(uuid.to_owned())
    }

    pub fn list(&self) -> Vec<String> {
        let (_, text) = ip(&["-j", "link", "show", "type", "ifb"]);
        let links: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        links
            .iter()
            .filter(|l| l["ifalias"].as_str().is_some_and(|a| a.contains(&self.0)))
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for DomainIfbs {
    fn drop(&mut self) {
        for name in self.list() {
            let _ = ip(&["link", "del", &name]);
        }
    }
}
