//! A fuzzing client of lxvirtd's D-Bus surface: every method of the
//! committed contract (`daemon/data/org.lxvirt.lxvirt1.xml`), called with
//! generated arguments of its signature, from several connections at once
//! in random order, against a live daemon. What it checks of each answer:
//! success, or an error lxvirt types (`org.lxvirt.lxvirt1.Error.*`), or
//! `org.freedesktop.DBus.Error.UnknownObject` for an object that is gone
//! (another connection removed it); for an unprivileged caller,
//! `AccessDenied` for every method that changes something, whatever its
//! arguments; a call that does not return within [`CALL_TIMEOUT`] is a
//! hang. The daemon's own survival and the state before and after are the
//! caller's to check (`tests/tests/dbus_fuzz.rs`, `lxvirt-dbus-fuzz`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use zbus::{Structure, Variant};

use crate::Rng;

/// A call that takes longer is reported as a hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

const BUS_NAME: &str = "org.lxvirt.lxvirt1";
const ROOT_PATH: &str = "/org/lxvirt/lxvirt1";
/// A domain path no domain has.
const NO_SUCH_DOMAIN: &str = "/org/lxvirt/lxvirt1/domain/_00000000000000000000000000000000";

/// The methods of the committed contract any local user may call; every
/// other one changes something.
pub const READ_METHODS: &[&str] = &[
    "org.lxvirt.lxvirt1.Manager.ListDomains",
    "org.lxvirt.lxvirt1.Manager.ListDomainSummaries",
    "org.lxvirt.lxvirt1.Manager.LookupByName",
    "org.lxvirt.lxvirt1.Manager.LookupByUUID",
    "org.lxvirt.lxvirt1.Manager.GetCapabilities",
    "org.lxvirt.lxvirt1.Manager.PlanApply",
    "org.lxvirt.lxvirt1.Manager.ListNetworks",
    "org.lxvirt.lxvirt1.Manager.NetworkLookupByName",
    "org.lxvirt.lxvirt1.Manager.NetworkLookupByUUID",
    "org.lxvirt.lxvirt1.Images.ListImages",
    "org.lxvirt.lxvirt1.Images.Inspect",
    "org.lxvirt.lxvirt1.Domain.GetXML",
    "org.lxvirt.lxvirt1.Domain.GetStats",
    "org.lxvirt.lxvirt1.Domain.GetMemoryParameters",
    "org.lxvirt.lxvirt1.Domain.GetSchedulerParameters",
    "org.lxvirt.lxvirt1.Domain.GetBlkioParameters",
    "org.lxvirt.lxvirt1.Domain.GetNumaParameters",
    "org.lxvirt.lxvirt1.Domain.GetEmulatorPin",
    "org.lxvirt.lxvirt1.Domain.GetPidsLimit",
    "org.lxvirt.lxvirt1.Domain.GetInterfaceAddresses",
    "org.lxvirt.lxvirt1.Domain.GetInterfaceStats",
    "org.lxvirt.lxvirt1.Network.GetXML",
    "org.lxvirt.lxvirt1.Network.GetDHCPLeases",
];

/// One method of the contract.
#[derive(Debug, Clone)]
pub struct Method {
    pub interface: String,
    pub member: String,
    /// Its input arguments: (name, D-Bus type).
    pub args: Vec<(String, String)>,
}

impl Method {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.interface, self.member)
    }

    fn reads_only(&self) -> bool {
        READ_METHODS.contains(&self.full_name().as_str())
    }
}

/// Every method of the committed contract.
pub fn contract() -> Result<Vec<Method>> {
    let xml = crate::without_doctype(lxvirtd::dbus::INTROSPECTION_XML);
    let node = lxvirtd::domain::xml::parse_str(&xml).context("the committed contract")?;
    let mut methods = Vec::new();
    for interface in node.elements_named("interface") {
        let name = interface.attr("name").unwrap_or_default();
        for method in interface.elements_named("method") {
            methods.push(Method {
                interface: name.to_owned(),
                member: method.attr("name").unwrap_or_default().to_owned(),
                args: method
                    .elements_named("arg")
                    .filter(|a| a.attr("direction") == Some("in"))
                    .map(|a| {
                        (
                            a.attr("name").unwrap_or_default().to_owned(),
                            a.attr("type").unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            });
        }
    }
    Ok(methods)
}

/// What the client may pass: documents, names and paths of the test's
/// own, so that what a privileged call does stays inside the daemon's
/// test tree (a domain runs a busybox root with its own network namespace;
/// a network is isolated).
#[derive(Debug, Clone)]
pub struct Inputs {
    /// A busybox root for the domain documents.
    pub rootfs: PathBuf,
    /// A small image tarball to import.
    pub tarball: PathBuf,
    /// Domain names (each defined or not).
    pub names: Vec<String>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub calls: u64,
    pub succeeded: u64,
    /// Error names and how often each came.
    pub errors: BTreeMap<String, u64>,
    /// Answers the contract does not allow, by method and error: how many,
    /// and the first message.
    pub unexpected: BTreeMap<String, (u64, String)>,
    pub hangs: u64,
    pub slowest_ms: u64,
    pub seconds: f64,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.calls += other.calls;
        self.succeeded += other.succeeded;
        for (name, count) in other.errors {
            *self.errors.entry(name).or_default() += count;
        }
        for (key, (count, example)) in other.unexpected {
            self.unexpected.entry(key).or_insert((0, example)).0 += count;
        }
        self.hangs += other.hangs;
        self.slowest_ms = self.slowest_ms.max(other.slowest_ms);
    }
}

/// Runs `calls` calls from `workers` connections to the daemon on
/// `address`; `unprivileged`: the caller expects every method that
/// changes something to be refused.
pub async fn run(
    address: &str,
    inputs: Inputs,
    calls: u64,
    workers: usize,
    seed: u64,
    unprivileged: bool,
) -> Result<Report> {
    let methods = Arc::new(contract()?);
    let inputs = Arc::new(inputs);
    let left = Arc::new(AtomicU64::new(calls));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers.max(1) {
        let connection = zbus::connection::Builder::address(address).build().await?;
        let methods = Arc::clone(&methods);
        let inputs = Arc::clone(&inputs);
        let left = Arc::clone(&left);
        let seed = seed ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        tasks.push(tokio::spawn(async move {
            worker_loop(connection, &methods, &inputs, &left, seed, unprivileged).await
        }));
    }
    let mut report = Report::default();
    for task in tasks {
        report.merge(task.await??);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn worker_loop(
    connection: zbus::Connection,
    methods: &[Method],
    inputs: &Inputs,
    left: &AtomicU64,
    seed: u64,
    unprivileged: bool,
) -> Result<Report> {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut domains: Vec<String> = Vec::new();
    let mut networks: Vec<String> = Vec::new();
    let mut uuids: Vec<String> = Vec::new();
    while left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        if report.calls % 64 == 0 {
            (domains, networks, uuids) = objects(&connection).await;
        }
        let method = rng.pick(methods);
        let path = match method.interface.as_str() {
            "org.lxvirt.lxvirt1.Domain" => {
                if domains.is_empty() || rng.below(20) == 0 {
                    NO_SUCH_DOMAIN.to_owned()
                } else {
                    rng.pick(&domains).clone()
                }
            }
            "org.lxvirt.lxvirt1.Network" if !networks.is_empty() => rng.pick(&networks).clone(),
            "org.lxvirt.lxvirt1.Network" | "org.lxvirt.lxvirt1.Collection" => {
                // Not a call: give the count back.
                left.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            _ => ROOT_PATH.to_owned(),
        };
        let mut files = Vec::new();
        let body = arguments(&mut rng, method, inputs, &uuids, &mut files)?;
        let begun = Instant::now();
        let (path_ref, interface, member) = (
            path.as_str(),
            method.interface.as_str(),
            method.member.as_str(),
        );
        let call = async {
            match &body {
                Some(body) => {
                    connection
                        .call_method(Some(BUS_NAME), path_ref, Some(interface), member, body)
                        .await
                }
                None => {
                    connection
                        .call_method(Some(BUS_NAME), path_ref, Some(interface), member, &())
                        .await
                }
            }
        };
        let answer = tokio::time::timeout(CALL_TIMEOUT, call).await;
        drop(files);
        report.calls += 1;
        let elapsed = begun.elapsed().as_millis() as u64;
        report.slowest_ms = report.slowest_ms.max(elapsed);
        let full = method.full_name();
        let problem = match answer {
            Err(_) => {
                report.hangs += 1;
                Some(("hang".to_owned(), format!("no answer in {CALL_TIMEOUT:?}")))
            }
            Ok(Ok(_)) => {
                report.succeeded += 1;
                (unprivileged && !method.reads_only()).then(|| {
                    (
                        "allowed".to_owned(),
                        "allowed to an unprivileged caller".to_owned(),
                    )
                })
            }
            Ok(Err(error)) if dbus_error(&error).is_some() => {
                let (name, message) = dbus_error(&error).unwrap_or_default();
                *report.errors.entry(name.clone()).or_default() += 1;
                // An object another worker removed meanwhile (or the bogus
                // one) is unknown to the bus's object server.
                let allowed = name == "org.freedesktop.DBus.Error.UnknownObject"
                    && path != ROOT_PATH
                    || if unprivileged && !method.reads_only() {
                        name == "org.lxvirt.lxvirt1.Error.AccessDenied"
                    } else {
                        name.starts_with("org.lxvirt.lxvirt1.Error.")
                    };
                (!allowed).then(|| (name, format!("on {path}: {message}")))
            }
            Ok(Err(other)) => {
                *report.errors.entry("(transport)".into()).or_default() += 1;
                Some(("(transport)".to_owned(), other.to_string()))
            }
        };
        if let Some((kind, example)) = problem {
            report
                .unexpected
                .entry(format!("{full}: {kind}"))
                .or_insert((0, example))
                .0 += 1;
        }
    }
    Ok(report)
}

/// The D-Bus error name and message of an error reply.
fn dbus_error(error: &zbus::Error) -> Option<(String, String)> {
    use zbus::DBusError;
    match error {
        zbus::Error::MethodError(name, message, _) => {
            Some((name.to_string(), message.clone().unwrap_or_default()))
        }
        zbus::Error::FDO(error) => Some((
            error.name().to_string(),
            error.description().unwrap_or_default().to_owned(),
        )),
        _ => None,
    }
}

/// The object paths of domains and networks, and the domains' uuids.
async fn objects(connection: &zbus::Connection) -> (Vec<String>, Vec<String>, Vec<String>) {
    let list = |member: &'static str| async move {
        connection
            .call_method(
                Some(BUS_NAME),
                ROOT_PATH,
                Some("org.lxvirt.lxvirt1.Manager"),
                member,
                &(),
            )
            .await
            .ok()
            .and_then(|reply| {
                reply
                    .body()
                    .deserialize::<Vec<zbus::OwnedObjectPath>>()
                    .ok()
            })
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    };
    let domains = list("ListDomains").await;
    let networks = list("ListNetworks").await;
    let uuids = domains
        .iter()
        .filter_map(|p| p.rsplit('/').next())
        .map(|id| id.trim_start_matches('_').replace('_', "-"))
        .collect();
    (domains, networks, uuids)
}

impl Report {
    /// The report as JSON, for `lxvirt-dbus-fuzz`'s caller.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.calls,
            "succeeded": self.succeeded,
            "errors": self.errors,
            "unexpected": self
                .unexpected
                .iter()
                .map(|(key, (count, example))| format!("{key} ×{count}: {example}"))
                .collect::<Vec<_>>(),
            "hangs": self.hangs,
            "slowest_ms": self.slowest_ms,
            "seconds": self.seconds,
        })
    }
}

/// The arguments of one call of `method`, chosen by name and type (`None`:
/// it takes none).
fn arguments(
    rng: &mut Rng,
    method: &Method,
    inputs: &Inputs,
    uuids: &[String],
    files: &mut Vec<File>,
) -> Result<Option<Structure<'static>>> {
    if method.args.is_empty() {
        return Ok(None);
    }
    let mut body = Structure::builder();
    for (name, kind) in &method.args {
        let value: Variant<'static> = match (kind.as_str(), name.as_str()) {
            ("s", "xml") => Variant::from(document(rng, method, inputs)),
            ("s", "uuid") => Variant::from(if uuids.is_empty() || rng.below(4) == 0 {
                rng.pick(&["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"])
                    .to_string()
            } else {
                rng.pick(uuids).clone()
            }),
            ("s", "name" | "reference") => Variant::from(name_like(rng, inputs)),
            ("s", "layout") => Variant::from(
                rng.pick(&[
                    "/nonexistent".to_owned(),
                    inputs.rootfs.display().to_string(),
                    String::new(),
                    "relative/path".into(),
                ])
                .clone(),
            ),
            ("s", "signal") => Variant::from(
                rng.pick(&["SIGTERM", "SIGKILL", "SIGUSR1", "0", "SIGNOPE", "", "15"])
                    .to_string(),
            ),
            ("s", _) => Variant::from(text(rng)),
            ("u", "grace_seconds") => Variant::from(rng.pick(&[1u32, 2]).to_owned()),
            ("u", _) => Variant::from(rng.pick(&[0u32, 1, 2, 3, 4, 0x1_0000, u32::MAX]).to_owned()),
            ("t", _) => Variant::from(
                rng.pick(&[0u64, 1, 1024, 65536, 1 << 40, u64::MAX])
                    .to_owned(),
            ),
            ("x", _) => Variant::from(rng.pick(&[0i64, 1, 2, -1, i64::MAX, i64::MIN]).to_owned()),
            ("b", _) => Variant::from(rng.below(2) == 0),
            ("h", _) => {
                let path = if name == "tarball" && rng.below(2) == 0 {
                    inputs.tarball.as_path()
                } else {
                    Path::new("/dev/null")
                };
                let file = if name == "tarball" {
                    File::open(path)?
                } else {
                    File::options().read(true).write(true).open("/dev/null")?
                };
                let fd = zbus::OwnedFd::from(std::os::fd::OwnedFd::from(file.try_clone()?));
                files.push(file);
                Variant::from(zbus::Fd::from(fd))
            }
            ("as", "command") => Variant::from(
                rng.pick(&[
                    vec!["/bin/true".to_owned()],
                    vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
                    vec![],
                    vec!["/nonexistent".into()],
                    vec![String::new()],
                ])
                .clone(),
            ),
            ("as", _) => Variant::from(
                (0..rng.below(3))
                    .map(|_| text(rng))
                    .collect::<Vec<String>>(),
            ),
            // A graceful stop of every domain waits as long as it is told
            // (busybox's init ignores SIGTERM): not a hang.
            ("a{sv}", _) if method.member == "ShutdownAll" => Variant::from(
                std::collections::HashMap::from([("timeout", Variant::from(1u32))]),
            ),
            ("a{sv}", _) => options(rng),
            ("a(ssb)", _) => {
                let documents: Vec<(String, String, bool)> = (0..rng.below(3))
                    .map(|i| {
                        (
                            format!("doc{i}.xml"),
                            document(rng, method, inputs),
                            rng.below(2) == 0,
                        )
                    })
                    .collect();
                Variant::from(documents)
            }
            (other, _) => anyhow::bail!(
                "{}: argument type {other}: teach the fuzzer",
                method.full_name()
            ),
        };
        body = body.append_field(value);
    }
    Ok(Some(body.build()?))
}

/// A domain, network or device document: mostly valid ones of the test's
/// own, some broken.
fn document(rng: &mut Rng, method: &Method, inputs: &Inputs) -> String {
    let name = name_like(rng, inputs);
    let root = inputs.rootfs.display();
    let domain = format!(
        "<domain type='lxc'><name>{name}</name><memory unit='MiB'>{memory}</memory>\
         <os><type>exe</type><init>/bin/sleep</init><initarg>1000</initarg></os>\
         <features><privnet/></features><devices><filesystem type='mount'>\
         <source dir='{root}'/><target dir='/'/></filesystem><console type='pty'/></devices></domain>",
        memory = rng.pick(&[16, 32, 64])
    );
    let network = format!(
        "<network><name>fz-net{}</name><bridge name='lxvfz{}'/></network>",
        rng.below(2),
        rng.below(2)
    );
    let device = rng
        .pick(&[
            format!("<filesystem type='mount'><source dir='{root}'/><target dir='/mnt'/><readonly/></filesystem>"),
            "<disk type='block'><source dev='/dev/null'/><target dev='vdz'/></disk>".to_owned(),
            "<interface type='bogus'/>".to_owned(),
        ])
        .clone();
    let valid = if method.member.contains("Network") {
        network
    } else if method.member.contains("Device") {
        device
    } else {
        domain
    };
    match rng.below(6) {
        0 => text(rng),
        1 => {
            // Cut short at a random point.
            let cut = rng.below(valid.len());
            valid.get(..cut).unwrap_or_default().to_owned()
        }
        _ => valid,
    }
}

fn name_like(rng: &mut Rng, inputs: &Inputs) -> String {
    if rng.below(4) == 0 {
        text(rng)
    } else {
        rng.pick(&inputs.names).clone()
    }
}

/// A string from a pool of awkward ones.
fn text(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => String::new(),
        1 => "x".repeat(rng.below(70_000)),
        2 => "../../etc/passwd".into(),
        3 => "<domain".into(),
        4 => "\u{202e}名前\u{1f600}".into(),
        5 => "<!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><d>&b;</d>".into(),
        6 => "-1".into(),
        7 => format!("{}", rng.next_u64()),
        _ => "<".repeat(rng.below(5000)),
    }
}

/// An options dictionary: known keys and others, values of every kind.
fn options(rng: &mut Rng) -> Variant<'static> {
    const KEYS: &[&str] = &[
        "name",
        "parent",
        "source",
        "token",
        "reference",
        "compression",
        "cwd",
        "noseclabel",
        "prune",
        "force",
        "flags",
        "hard_limit",
        "soft_limit",
        "swap_hard_limit",
        "cpu_shares",
        "vcpu_period",
        "vcpu_quota",
        "weight",
        "device_weight",
        "nodeset",
        "mode",
        "bogus",
        "",
    ];
    let mut dict = std::collections::HashMap::<String, Variant<'static>>::new();
    for _ in 0..rng.below(4) {
        let key = rng.pick(KEYS).to_string();
        let value = match rng.below(5) {
            0 => Variant::from(text(rng)),
            1 => Variant::from(rng.next_u64() as u32),
            2 => Variant::from(rng.next_u64()),
            3 => Variant::from(rng.below(2) == 0),
            _ => Variant::from(rng.pick(&["gzip", "zstd", "none", "/", "0-1"]).to_string()),
        };
        dict.insert(key, value);
    }
    Variant::from(dict)
}
