//! dnsmasq as a virtual network's DHCP and DNS server.
//!
//! One dnsmasq per active network that serves DHCP or DNS, with every file
//! of it in the network's run directory: `NAME.conf` (written by lxvirtd
//! at each start), `NAME.pid`, `NAME.leases` (dnsmasq's own lease file)
//! and `NAME.hosts/` (one file per container port, `MAC,IP,NAME` or
//! `MAC,NAME`, which dnsmasq watches with inotify: the container gets the
//! address lxvirt assigned it, and its name resolves as soon as it asks
//! for a lease, whatever its DHCP client sends). dnsmasq reads new files
//! by itself but keeps the records of deleted ones until a SIGHUP, which
//! [`reload`] sends. dnsmasq daemonizes
//! and reports its start-up errors through its exit status, so a start
//! either serves or says why; it is found again after a daemon restart by
//! its pid file and its command line.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use crate::domain::NetworkDef;
use crate::sys::process::{find_process, pidfd_open, start_time};

/// Why dnsmasq could not be started or found.
#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    #[error("cannot run dnsmasq (install the dnsmasq-base package): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("dnsmasq for network {network} did not start: {message}")]
    Failed { network: String, message: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files of one network's dnsmasq.
#[derive(Debug, Clone)]
pub struct Files {
    pub conf: PathBuf,
    pub pid: PathBuf,
    pub leases: PathBuf,
    pub hosts: PathBuf,
}

impl Files {
    pub fn new(dir: &Path, network: &str) -> Files {
        Files {
            conf: dir.join(format!("{network}.conf")),
            pid: dir.join(format!("{network}.pid")),
            leases: dir.join(format!("{network}.leases")),
            hosts: dir.join(format!("{network}.hosts")),
        }
    }

    fn conf_argument(&self) -> String {
        format!("--conf-file={}", self.conf.display())
    }
}

/// Whether the network needs a dnsmasq: it serves DHCP, or DNS on an
/// address of its own.
pub fn needed(def: &NetworkDef) -> bool {
    !def.ips.is_empty() && (def.dns.enable || def.ips.iter().any(|ip| ip.dhcp.is_some()))
}

/// dnsmasq's configuration for the network on `bridge`, running as `user`.
pub fn config(def: &NetworkDef, bridge: &str, files: &Files, user: &str) -> String {
    let mut c = String::new();
    let line = |c: &mut String, text: &str| {
        c.push_str(text);
        c.push('\n');
    };
    let _ = writeln!(
        c,
        "# Written by lxvirtd for network {} at each start; edits are lost.",
        def.name()
    );
    line(&mut c, "strict-order");
    line(&mut c, "bind-dynamic");
    line(&mut c, "except-interface=lo");
    let _ = writeln!(c, "interface={bridge}");
    let _ = writeln!(c, "user={user}");
    let _ = writeln!(c, "pid-file={}", files.pid.display());
    if !def.dns.enable {
        line(&mut c, "port=0");
    } else {
        if let Some(domain) = &def.domain {
            let _ = writeln!(c, "domain={}", domain.name);
            line(&mut c, "expand-hosts");
            if domain.local_only {
                let _ = writeln!(c, "local=/{}/", domain.name);
            }
        }
        let mut own_servers = false;
        for forwarder in &def.dns.forwarders {
            match (&forwarder.domain, forwarder.addr) {
                (Some(domain), Some(addr)) => {
                    let _ = writeln!(c, "server=/{domain}/{addr}");
                }
                (Some(domain), None) => {
                    // Names of that domain are answered here or not at all.
                    let _ = writeln!(c, "local=/{domain}/");
                }
                (None, Some(addr)) => {
                    own_servers = true;
                    let _ = writeln!(c, "server={addr}");
                }
                (None, None) => {}
            }
        }
        if own_servers {
            line(&mut c, "no-resolv");
        }
        let _ = writeln!(c, "addn-hosts={}", files.hosts.join("dns").display());
    }
    let mut leases = 0u128;
    let mut ipv6_ra = false;
    for ip in &def.ips {
        let Some(dhcp) = &ip.dhcp else { continue };
        for range in &dhcp.ranges {
            match (range.start, range.end) {
                (IpAddr::V4(start), IpAddr::V4(end)) => {
                    let mask = std::net::Ipv4Addr::from(
                        u32::MAX.checked_shl(32 - u32::from(ip.prefix)).unwrap_or(0),
                    );
                    let _ = writeln!(c, "dhcp-range={start},{end},{mask}");
                    leases += u128::from(u32::from(end).saturating_sub(u32::from(start))) + 1;
                }
                (IpAddr::V6(start), IpAddr::V6(end)) => {
                    let _ = writeln!(c, "dhcp-range={start},{end},{}", ip.prefix);
                    leases += u128::from(end).saturating_sub(u128::from(start)) + 1;
                    ipv6_ra = true;
                }
                _ => {}
            }
        }
        for host in &dhcp.hosts {
            let mut entry = String::from("dhcp-host=");
            if let Some(mac) = &host.mac {
                let _ = write!(entry, "{mac},");
            }
            match host.ip {
                IpAddr::V6(v6) => {
                    let _ = write!(entry, "[{v6}]");
                }
                IpAddr::V4(v4) => {
                    let _ = write!(entry, "{v4}");
                }
            }
            if let Some(name) = &host.name {
                let _ = write!(entry, ",{name}");
            }
            line(&mut c, &entry);
        }
    }
    if leases > 0 {
        // dnsmasq would ping an address before offering it and hold the
        // offer ~3 s for the answer; the subnet is the network's own and
        // its leases are dnsmasq's, so a container gets its address at once.
        line(&mut c, "no-ping");
        line(&mut c, "dhcp-no-override");
        line(&mut c, "dhcp-authoritative");
        let _ = writeln!(c, "dhcp-lease-max={}", leases.min(u128::from(u32::MAX)));
        let _ = writeln!(c, "dhcp-leasefile={}", files.leases.display());
        let _ = writeln!(c, "dhcp-hostsdir={}", files.hosts.join("ports").display());
        if ipv6_ra {
            line(&mut c, "enable-ra");
        }
    }
    c
}

/// The `/etc/hosts`-style lines of the network's `<dns><host>` entries.
pub fn dns_hosts(def: &NetworkDef) -> String {
    let mut text = String::new();
    for host in &def.dns.hosts {
        let _ = writeln!(text, "{} {}", host.ip, host.hostnames.join(" "));
    }
    text
}

/// A running dnsmasq: its pid and a pidfd that watches it.
#[derive(Debug)]
pub struct Running {
    pub pid: i32,
    pub start_time: u64,
    pub pidfd: OwnedFd,
}

/// Writes the configuration and starts dnsmasq, which daemonizes once it
/// serves (or exits non-zero with its reason on stderr).
pub fn start(
    def: &NetworkDef,
    bridge: &str,
    files: &Files,
    user: &str,
) -> Result<Running, DnsmasqError> {
    let write = |path: &Path, text: &str| {
        crate::persist::replace_file(path, text.as_bytes(), 0o644).map_err(|source| {
            DnsmasqError::Write {
                path: path.to_owned(),
                source,
            }
        })
    };
    for dir in [files.hosts.clone(), files.hosts.join("ports")] {
        std::fs::create_dir_all(&dir).map_err(|source| DnsmasqError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    write(&files.hosts.join("dns"), &dns_hosts(def))?;
    write(&files.conf, &config(def, bridge, files, user))?;
    let _ = std::fs::remove_file(&files.pid);
    let output = std::process::Command::new("dnsmasq")
        .arg(files.conf_argument())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(DnsmasqError::Spawn)?;
    let failed = |message: String| DnsmasqError::Failed {
        network: def.name().to_owned(),
        message,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(
            stderr.trim().trim_start_matches("dnsmasq: ").to_owned(),
        ));
    }
    find(files).ok_or_else(|| failed(format!("it left no pid file at {}", files.pid.display())))
}

/// The dnsmasq serving with these files, if one runs.
pub fn find(files: &Files) -> Option<Running> {
    let pid: i32 = std::fs::read_to_string(&files.pid)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pidfd = pidfd_open(Pid::from_raw(pid)).ok()?;
    // Checked after the pidfd is open, so the pidfd is that process.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == files.conf_argument().as_bytes());
    let start_time = start_time(Pid::from_raw(pid))?;
    ours.then_some(Running {
        pid,
        start_time,
        pidfd,
    })
}

/// The dnsmasq `pid` started at `start_time`, if it still runs.
pub fn find_by_pid(pid: i32, start_time: u64) -> Option<Running> {
    let pidfd = find_process(pid, start_time)?;
    Some(Running {
        pid,
        start_time,
        pidfd,
    })
}

/// A container's port: dnsmasq gives its MAC the container's name and,
/// when lxvirt pinned one, that address (dnsmasq's `dhcp-host` format).
pub fn add_port(
    files: &Files,
    mac: &str,
    address: Option<Ipv4Addr>,
    name: &str,
) -> std::io::Result<()> {
    let path = files.hosts.join("ports").join(mac.replace(':', "-"));
    crate::persist::replace_file(&path, port_line(mac, address, name).as_bytes(), 0o644)
}

/// The `dhcp-host` line of a port.
pub fn port_line(mac: &str, address: Option<Ipv4Addr>, name: &str) -> String {
    match address {
        Some(address) => format!("{mac},{address},{name}\n"),
        None => format!("{mac},{name}\n"),
    }
}

/// Makes the running dnsmasq, if any, read its host files again: it
/// forgets the records of ports whose files are gone (else it would go
/// on pinning a departed MAC's address, and refuse to pin that address
/// for another MAC).
pub fn reload(files: &Files) {
    if let Some(running) = find(files) {
        let _ = crate::sys::process::pidfd_kill(
            std::os::fd::AsFd::as_fd(&running.pidfd),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
}

/// Removes a port's file; whether there was one.
pub fn remove_port(files: &Files, mac: &str) -> bool {
    std::fs::remove_file(files.hosts.join("ports").join(mac.replace(':', "-"))).is_ok()
}

/// Removes every file of the network's dnsmasq.
pub fn remove_files(files: &Files) {
    for path in [&files.conf, &files.pid, &files.leases] {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(&files.hosts);
}

/// One lease of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Seconds since the epoch; 0 for an infinite lease.
    pub expiry: u64,
    pub mac: String,
    pub ip: IpAddr,
    /// The prefix of the network's subnet it is in (0 when unknown: the
    /// lease file does not say).
    pub prefix: u8,
    pub hostname: Option<String>,
    pub client_id: Option<String>,
}

/// The leases of a lease file: `EXPIRY MAC IP HOSTNAME CLIENTID` per line
/// (`*` for an absent name or id); IPv6 leases, after a `duid` line, have
/// the IAID where IPv4 ones have the MAC.
pub fn parse_leases(text: &str) -> Vec<Lease> {
    let absent = |s: &str| (s != "*").then(|| s.to_owned());
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [expiry, mac, ip, hostname, client_id] = fields[..] else {
                return None;
            };
            Some(Lease {
                expiry: expiry.parse().ok()?,
                mac: mac.to_owned(),
                ip: ip.parse().ok()?,
                prefix: 0,
                hostname: absent(hostname),
                client_id: absent(client_id),
            })
        })
        .collect()
}

pub fn leases(files: &Files) -> Vec<Lease> {
    std::fs::read_to_string(&files.leases)
        .map(|text| parse_leases(&text))
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn files() -> Files {
        Files::new(Path::new("/run/lxvirt/network"), "default")
    }

    #[test]
    fn a_dhcp_network_gets_ranges_hosts_and_its_own_files() {
        let def = NetworkDef::from_xml(
            "<network><name>default</name><domain name='lab' localOnly='yes'/>\
             <dns><forwarder addr='10.251.0.53'/><host ip='10.251.9.9'><hostname>db</hostname></host></dns>\
             <ip address='10.251.9.1' prefix='24'><dhcp><range start='10.251.9.100' end='10.251.9.199'/>\
             <host mac='52:54:00:00:00:01' name='web' ip='10.251.9.10'/></dhcp></ip></network>",
        )
        .unwrap();
        let conf = config(&def, "lxvirtbr0", &files(), "dnsmasq");
        for expected in [
            "interface=lxvirtbr0",
            "user=dnsmasq",
            "pid-file=/run/lxvirt/network/default.pid",
            "domain=lab",
            "local=/lab/",
            "server=10.251.0.53",
            "no-resolv",
            "dhcp-range=10.251.9.100,10.251.9.199,255.255.255.0",
            "dhcp-host=52:54:00:00:00:01,10.251.9.10,web",
            "dhcp-lease-max=100",
            "dhcp-leasefile=/run/lxvirt/network/default.leases",
            "dhcp-hostsdir=/run/lxvirt/network/default.hosts/ports",
            "addn-hosts=/run/lxvirt/network/default.hosts/dns",
        ] {
            assert!(
                conf.lines().any(|l| l == expected),
                "no {expected:?} in\n{conf}"
            );
        }
        assert_eq!(dns_hosts(&def), "10.251.9.9 db\n");
        assert!(needed(&def));
    }

    #[test]
    fn dns_off_and_no_dhcp_means_no_server() {
        let def = NetworkDef::from_xml(
            "<network><name>quiet</name><dns enable='no'/><ip address='10.251.9.1' prefix='24'/></network>",
        )
        .unwrap();
        assert!(!needed(&def));
        let with_dhcp = NetworkDef::from_xml(
            "<network><name>d</name><dns enable='no'/><ip address='10.251.9.1' prefix='24'>\
             <dhcp><range start='10.251.9.2' end='10.251.9.3'/></dhcp></ip></network>",
        )
        .unwrap();
        assert!(needed(&with_dhcp));
        let conf = config(&with_dhcp, "b", &files(), "nobody");
        assert!(conf.lines().any(|l| l == "port=0"), "{conf}");
        assert!(!conf.contains("addn-hosts"), "{conf}");
    }

    #[test]
    fn a_port_line_pins_the_address_lxvirt_assigned() {
        let pinned = port_line(
            "52:54:00:00:00:01",
            Some(Ipv4Addr::new(10, 251, 9, 100)),
            "web",
        );
        assert_eq!(pinned, "52:54:00:00:00:01,10.251.9.100,web\n");
        assert_eq!(
            port_line("52:54:00:00:00:01", None, "web"),
            "52:54:00:00:00:01,web\n"
        );
    }

    #[test]
    fn leases_are_read_and_bad_lines_skipped() {
        let text = "1700000000 52:54:00:00:00:01 10.251.9.10 web *\n\
                    garbage\n\
                    0 52:54:00:00:00:02 10.251.9.11 * 01:52:54:00:00:00:02\n";
        let leases = parse_leases(text);
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].hostname.as_deref(), Some("web"));
        assert_eq!(leases[1].hostname, None);
        assert_eq!(leases[1].client_id.as_deref(), Some("01:52:54:00:00:00:02"));
    }
}
