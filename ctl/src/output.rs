//! Rendering of listings and info as text tables or JSON.

use serde::Serialize;

/// One row of `lxvirt list`, and the body of `lxvirt dominfo`.
#[derive(Debug, Clone, Serialize)]
pub struct DomainRow {
    pub name: String,
    pub uuid: String,
    #[serde(rename = "type")]
    pub domain_type: String,
    pub state: String,
    pub state_reason: String,
    pub persistent: bool,
    pub autostart: bool,
    /// The SELinux process label while running; empty when unconfined.
    pub security_label: String,
    /// `auto`, `host` or `idmap`.
    pub user_namespace: String,
    /// The running instance's host ids (first, count) in mode auto.
    pub host_ids: Option<(u32, u32)>,
}

impl DomainRow {
    pub fn is_active(&self) -> bool {
        self.state != "shutoff"
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A left-aligned text table; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push(' ');
            text.push_str(cell);
            if i != last {
                text.push_str(&" ".repeat(width - cell.chars().count() + 1));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A table of `rows`, each made into cells by `cells`.
fn table_of<T>(headers: &[&str], rows: &[T], cells: impl Fn(&T) -> Vec<String>) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(cells).collect();
    table(headers, &body)
}

pub fn list_text(rows: &[DomainRow]) -> String {
    let headers = ["Name", "State", "Type", "Autostart", "Persistent", "Label"];
    table_of(&headers, rows, |r| {
        vec![
            r.name.clone(),
            r.state.clone(),
            r.domain_type.clone(),
            yes_no(r.autostart).to_owned(),
            yes_no(r.persistent).to_owned(),
            label_or_dash(&r.security_label),
        ]
    })
}

/// One row of `lxvirt net-list`, and the body of `lxvirt net-info`.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkRow {
    pub name: String,
    pub uuid: String,
    /// `active` or `inactive`.
    pub state: String,
    pub persistent: bool,
    pub autostart: bool,
    pub bridge: String,
}

impl NetworkRow {
    pub fn is_active(&self) -> bool {
        self.state == "active"
    }
}

pub fn net_list_text(rows: &[NetworkRow]) -> String {
    let headers = ["Name", "State", "Autostart", "Persistent", "Bridge"];
    table_of(&headers, rows, |r| {
        vec![
            r.name.clone(),
            r.state.clone(),
            yes_no(r.autostart).to_owned(),
            yes_no(r.persistent).to_owned(),
            r.bridge.clone(),
        ]
    })
}

/// One row of `lxvirt domiflist`.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceRow {
    /// The host-side name (live definitions name every veth end).
    pub interface: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The network, bridge or device it is on.
    pub source: String,
    /// Its name inside, when the definition gives one.
    pub guest: String,
    pub mac: String,
}

pub fn domiflist_text(rows: &[InterfaceRow]) -> String {
    let headers = ["Interface", "Type", "Source", "Guest", "MAC"];
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    table_of(&headers, rows, |r| {
        vec![
            dash(&r.interface),
            r.kind.clone(),
            dash(&r.source),
            dash(&r.guest),
            dash(&r.mac),
        ]
    })
}

/// One row of `lxvirt domifaddr`.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceAddressRow {
    pub name: String,
    pub mac: String,
    /// ADDRESS/PREFIX.
    pub addresses: Vec<String>,
}

pub fn domifaddr_text(rows: &[InterfaceAddressRow]) -> String {
    let headers = ["Name", "MAC address", "Protocol", "Address"];
    let mut body = Vec::new();
    for row in rows {
        if row.addresses.is_empty() {
            body.push(vec![
                row.name.clone(),
                row.mac.clone(),
                "-".into(),
                "-".into(),
            ]);
        }
        for (i, address) in row.addresses.iter().enumerate() {
            let protocol = if address.contains(':') {
                "ipv6"
            } else {
                "ipv4"
            };
            let (name, mac) = if i == 0 {
                (row.name.clone(), row.mac.clone())
            } else {
                ("-".into(), "-".into())
            };
            body.push(vec![name, mac, protocol.into(), address.clone()]);
        }
    }
    table(&headers, &body)
}

/// One row of `lxvirt net-dhcp-leases`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseRow {
    pub mac: String,
    /// ADDRESS/PREFIX.
    pub address: String,
    pub hostname: String,
    pub client_id: String,
    /// Seconds since the epoch; 0: never.
    pub expiry: u64,
}

pub fn leases_text(rows: &[LeaseRow]) -> String {
    let headers = [
        "MAC address",
        "IP address",
        "Hostname",
        "Client ID",
        "Expires",
    ];
    table_of(&headers, rows, |r| {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        vec![
            r.mac.clone(),
            r.address.clone(),
            or_dash(&r.hostname),
            or_dash(&r.client_id),
            if r.expiry == 0 {
                "never".to_owned()
            } else {
                format!("in {}s", r.expiry.saturating_sub(now_secs()))
            },
        ]
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn net_info_text(row: &NetworkRow) -> String {
    fields_text(&[
        ("Name", row.name.clone()),
        ("UUID", row.uuid.clone()),
        ("Active", yes_no(row.is_active()).to_owned()),
        ("Persistent", yes_no(row.persistent).to_owned()),
        ("Autostart", yes_no(row.autostart).to_owned()),
        ("Bridge", row.bridge.clone()),
    ])
}

/// `Key:` and value lines, the values aligned.
fn fields_text(fields: &[(&str, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{:<16}{v}\n", format!("{k}:")))
        .collect()
}

fn label_or_dash(label: &str) -> String {
    if label.is_empty() {
        "-".to_owned()
    } else {
        label.to_owned()
    }
}

/// What `lxvirt dominfo` shows.
#[derive(Debug, Clone, Serialize)]
pub struct DomainInfo {
    #[serde(flatten)]
    pub row: DomainRow,
    pub pid: Option<u32>,
    pub start_time: Option<u64>,
    pub stats: std::collections::BTreeMap<String, u64>,
}

/// `auto (host ids 1065536-1131071)`, `host (root inside is host root)`…
fn user_namespace_text(row: &DomainRow) -> String {
    match (row.user_namespace.as_str(), row.host_ids) {
        ("auto", Some((first, count))) if count > 0 => format!(
            "auto (host ids {first}-{})",
            u64::from(first) + u64::from(count) - 1
        ),
        ("auto", _) => "auto (host ids allocated at start)".to_owned(),
        ("host", _) => "host (root inside is host root)".to_owned(),
        ("idmap", _) => "idmap (the ranges of <idmap>)".to_owned(),
        (other, _) => label_or_dash(other),
    }
}

/// A VM's qemu runs as the first id of the domain's block.
fn qemu_user_text(row: &DomainRow) -> String {
    match row.host_ids {
        Some((first, _)) => format!("uid {first} (its own)"),
        None => "a uid of its own, allocated at start".to_owned(),
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    unix_now_precise().as_secs()
}

/// Time since the epoch, now.
pub fn unix_now_precise() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `2026-12-05 01:15:18 UTC (3 min ago)`.
pub fn started_text(start: u64, now: u64) -> String {
    format!(
        "{} ({})",
        utc_text(start),
        ago_text(now.saturating_sub(start))
    )
}

/// A time as `YYYY-MM-DD HH:MM:SS UTC`: the same on every host, whatever
/// its time zone, and sortable.
pub fn utc_text(epoch_seconds: u64) -> String {
    format!("{} UTC", date_and_time(epoch_seconds))
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC`, for event time stamps.
pub fn utc_text_millis(since_epoch: std::time::Duration) -> String {
    format!(
        "{}.{:03} UTC",
        date_and_time(since_epoch.as_secs()),
        since_epoch.subsec_millis()
    )
}

fn date_and_time(epoch_seconds: u64) -> String {
    let days = i64::try_from(epoch_seconds / 86_400).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let rest = epoch_seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01),
/// by Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=12, 1..=31).
    (year, month as u32, day as u32)
}

/// How long ago, roughly: `12 s ago`, `3 min ago`, `2 h 5 min ago`, `4 days ago`.
fn ago_text(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h {} min ago", seconds / 3600, seconds / 60 % 60),
        _ => {
            let days = seconds / 86_400;
            format!("{days} day{} ago", if days == 1 { "" } else { "s" })
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn info_text(info: &DomainInfo) -> String {
    let row = &info.row;
    let mut fields = vec![
        ("Name", row.name.clone()),
        ("UUID", row.uuid.clone()),
        ("Type", row.domain_type.clone()),
        ("State", row.state.clone()),
        ("State reason", row.state_reason.clone()),
        ("Persistent", yes_no(row.persistent).to_owned()),
        ("Autostart", yes_no(row.autostart).to_owned()),
    ];
    let vm = row.domain_type != "lxc";
    // What differs between the two kinds, in the same places.
    fields.push((
        "Kernel",
        match row.domain_type.as_str() {
            "lxc" => "shared with the host",
            "kvm" => "its own, in qemu under KVM",
            _ => "its own, in qemu under TCG (emulated CPU)",
        }
        .to_owned(),
    ));
    if row.is_active() {
        fields.push(("Security label", label_or_dash(&row.security_label)));
    }
    if vm {
        fields.push(("qemu runs as", qemu_user_text(row)));
    } else {
        fields.push(("User namespace", user_namespace_text(row)));
    }
    if let Some(pid) = info.pid {
        fields.push((if vm { "qemu pid" } else { "Init pid" }, pid.to_string()));
    }
    if let Some(start) = info.start_time {
        fields.push(("Started", started_text(start, unix_now())));
    }
    match (
        info.stats.get("memory.current"),
        info.stats.get("memory.limit"),
    ) {
        (Some(used), Some(limit)) => {
            fields.push(("Memory", format!("{} / {}", mib(*used), mib(*limit))))
        }
        (Some(used), None) => fields.push(("Memory", mib(*used))),
        _ => {}
    }
    if let Some(ns) = info.stats.get("cpu.time") {
        fields.push(("CPU time", format!("{:.3} s", *ns as f64 / 1e9)));
    }
    if let Some(pids) = info.stats.get("pids.current") {
        fields.push(("Processes", pids.to_string()));
    }
    fields_text(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates_and_how_long_ago() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        // The figure dominfo showed before: 1796433318.
        assert_eq!(utc_text(1_796_433_318), "2026-12-05 01:15:18 UTC");
        // A leap day, and the day after the last day of a century year.
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(4_107_542_400), "2100-03-01 00:00:00 UTC");
        assert_eq!(
            utc_text_millis(std::time::Duration::from_millis(1_796_433_318_042)),
            "2026-12-05 01:15:18.042 UTC"
        );
        assert_eq!(
            started_text(1_796_433_318, 1_796_433_318 + 185),
            "2026-12-05 01:15:18 UTC (3 min ago)"
        );
        assert_eq!(ago_text(59), "59 s ago");
        assert_eq!(ago_text(3600 + 5 * 60), "1 h 5 min ago");
        assert_eq!(ago_text(86_400), "1 day ago");
        assert_eq!(ago_text(3 * 86_400), "3 days ago");
        // A start time ahead of this host's clock reads as now.
        assert_eq!(started_text(100, 50), "1970-01-01 00:01:40 UTC (0 s ago)");
    }

    #[test]
    fn list_and_info_show_the_label() {
        let mut row = DomainRow {
            name: "web".into(),
            uuid: "u".into(),
            domain_type: "lxc".into(),
            state: "running".into(),
            state_reason: "booted".into(),
            persistent: true,
            autostart: false,
            security_label: "system_u:system_r:svirt_lxc_net_t:s0:c13,c721".into(),
            user_namespace: "auto".into(),
            host_ids: Some((1_065_536, 65536)),
        };
        let list = list_text(std::slice::from_ref(&row));
        assert!(list.lines().next().unwrap().ends_with("Label"), "{list}");
        assert!(list.contains("svirt_lxc_net_t:s0:c13,c721"), "{list}");
        let info = DomainInfo {
            row: row.clone(),
            pid: None,
            start_time: None,
            stats: Default::default(),
        };
        assert!(
            info_text(&info)
                .contains("Security label: system_u:system_r:svirt_lxc_net_t:s0:c13,c721\n"),
            "{}",
            info_text(&info)
        );
        row.security_label.clear();
        assert!(list_text(&[row]).lines().nth(1).unwrap().ends_with(" -"));
    }

    #[test]
    fn info_shows_the_user_namespace() {
        let mut info = DomainInfo {
            row: DomainRow {
                name: "web".into(),
                uuid: "u".into(),
                domain_type: "lxc".into(),
                state: "running".into(),
                state_reason: "booted".into(),
                persistent: true,
                autostart: false,
                security_label: String::new(),
                user_namespace: "auto".into(),
                host_ids: Some((1_065_536, 65536)),
            },
            pid: None,
            start_time: None,
            stats: Default::default(),
        };
        let text = info_text(&info);
        assert!(
            text.contains("User namespace: auto (host ids 1065536-1131071)\n"),
            "{text}"
        );
        info.row.user_namespace = "host".into();
        info.row.host_ids = None;
        assert!(info_text(&info).contains("User namespace: host (root inside is host root)\n"));
        assert!(info_text(&info).contains("Kernel:         shared with the host\n"));
    }

    /// The same fields for a VM, with what differs: its own kernel, the
    /// uid its qemu runs as, qemu's pid.
    #[test]
    fn info_of_a_vm_says_what_differs() {
        let info = DomainInfo {
            row: DomainRow {
                name: "vm".into(),
                uuid: "u".into(),
                domain_type: "qemu".into(),
                state: "running".into(),
                state_reason: "booted".into(),
                persistent: true,
                autostart: false,
                security_label: "system_u:system_r:svirt_tcg_t:s0:c1,c2".into(),
                user_namespace: "auto".into(),
                host_ids: Some((1_065_536, 65536)),
            },
            pid: Some(42),
            start_time: None,
            stats: Default::default(),
        };
        let text = info_text(&info);
        for line in [
            "Kernel:         its own, in qemu under TCG (emulated CPU)\n",
            "qemu runs as:   uid 1065536 (its own)\n",
            "qemu pid:       42\n",
            "Security label: system_u:system_r:svirt_tcg_t:s0:c1,c2\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(!text.contains("User namespace"), "{text}");
    }

    #[test]
    fn networks_list_and_info() {
        let row = NetworkRow {
            name: "lan".into(),
            uuid: "u".into(),
            state: "inactive".into(),
            persistent: true,
            autostart: false,
            bridge: "lxvirtbr0".into(),
        };
        assert_eq!(
            net_list_text(std::slice::from_ref(&row)),
            " Name  State     Autostart  Persistent  Bridge\n lan   inactive  no         yes         lxvirtbr0\n"
        );
        let info = net_info_text(&row);
        assert!(info.contains("Active:         no\n"), "{info}");
        assert!(info.contains("Bridge:         lxvirtbr0\n"), "{info}");
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(
            &["Name", "State"],
            &[
                vec!["web".into(), "running".into()],
                vec!["database".into(), "shutoff".into()],
            ],
        );
        assert_eq!(
            text,
            " Name      State\n web       running\n database  shutoff\n"
        );
    }
}
