//! The hand-written client proxies (`src/proxy.rs`) against the committed
//! contract (`daemon/data/org.lxvirt.lxvirt1.xml`): they must not drift.
//!
//! zbus's proxy macro leaves nothing to inspect at run time, so the test
//! watches the proxies on the wire. A fake server on the other end of a
//! peer-to-peer connection (a socket pair) answers every call from the
//! contract alone:
//!
//! - a method call is looked up by interface and name; its body signature
//!   must be the contract's in-signature, and the reply carries values of
//!   the contract's out-signature (zeros, empty strings and containers, a
//!   descriptor of /dev/null, "/"), so the proxy's decoding of the reply,
//!   which zbus checks against the Rust type, is tested too;
//! - `Properties.Get` of a readable property is answered with a value of
//!   the contract's type; `Properties.Set` must name a writable property
//!   and send a value of its type;
//! - each signal of the contract is emitted with values of its signature
//!   and must arrive through the proxy's `receive_*` stream (which filters
//!   on the signal's name) and decode into the proxy's argument types.
//!
//! The test calls every proxy member, and two checks keep that list whole:
//! the members are read from the proxy source (with `syn`) and each must
//! have been called, and every method, property access and signal of the
//! contract's proxied interfaces must have been met on the wire. A call
//! must also reach the member its Rust name says (`define_xml` →
//! `DefineXML`, `set_autostart` → a Set of `Autostart`), so two members
//! that swapped names would not pass.
//!
//! One thing the wire cannot tell: zbus writes a body's signature without
//! the parentheses of a lone structure, so `(ss)` and `ss` are one to it;
//! signatures are compared parsed, where they are one as well.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::future::Future;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use lxvirt_api::proxy::{DomainProxy, ImagesProxy, ManagerProxy, NetworkProxy};
use lxvirt_api::{BUS_NAME, INTROSPECTION_XML, MANAGER_PATH, domain_path, network_path};
use lxvirt_domain::xml::{self, Element};
use zbus::connection::Builder;
use zbus::message::Type as MessageType;
use zbus::proxy::CacheProperties;
use zbus::{
    Array, Connection, Dict, Fd, Guid, Message, MessageStream, ObjectPath, OwnedVariant, Signature,
    Structure, Variant,
};

const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// (interface, member name).
type Key = (String, String);

/// What the committed XML says of the interfaces that have a proxy.
#[derive(Debug, Default)]
struct Contract {
    /// Types of the in- and out-arguments.
    methods: BTreeMap<Key, (Vec<String>, Vec<String>)>,
    /// Type and access (`read`, `write`, `readwrite`).
    properties: BTreeMap<Key, (String, String)>,
    /// Types of the arguments.
    signals: BTreeMap<Key, Vec<String>>,
}

impl Contract {
    fn parse(text: &str, interfaces: &BTreeSet<String>) -> Contract {
        let root = xml::parse_str(text).expect("the contract is well-formed XML");
        let mut contract = Contract::default();
        for interface in root.elements_named("interface") {
            let name = interface.attr("name").unwrap().to_owned();
            if !interfaces.contains(&name) {
                continue;
            }
            let key = |el: &Element| (name.clone(), el.attr("name").unwrap().to_owned());
            let types = |el: &Element, direction: &str| -> Vec<String> {
                el.elements_named("arg")
                    .filter(|a| a.attr("direction").unwrap_or("in") == direction)
                    .map(|a| a.attr("type").unwrap().to_owned())
                    .collect()
            };
            for method in interface.elements_named("method") {
                let args = (types(method, "in"), types(method, "out"));
                contract.methods.insert(key(method), args);
            }
            for property in interface.elements_named("property") {
                let ty = property.attr("type").unwrap().to_owned();
                let access = property.attr("access").unwrap().to_owned();
                contract.properties.insert(key(property), (ty, access));
            }
            for signal in interface.elements_named("signal") {
                contract.signals.insert(key(signal), types(signal, "in"));
            }
        }
        contract
    }

    /// Everything a complete set of proxies meets on the wire.
    fn members(&self) -> BTreeSet<(Kind, Key)> {
        let methods = self.methods.keys().map(|k| (Kind::Method, k.clone()));
        let properties = self.properties.iter().flat_map(|(k, (_, access))| {
            let get = access.contains("read").then(|| (Kind::Get, k.clone()));
            let set = access.contains("write").then(|| (Kind::Set, k.clone()));
            get.into_iter().chain(set)
        });
        let signals = self.signals.keys().map(|k| (Kind::Signal, k.clone()));
        methods.chain(properties).chain(signals).collect()
    }
}

/// The proxy traits of `src/proxy.rs`: name, interface and members.
fn proxy_source() -> Vec<(String, String, Vec<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/proxy.rs");
    let source = std::fs::read_to_string(path).unwrap();
    let file = syn::parse_file(&source).unwrap();
    let mut traits = Vec::new();
    // Top-level items, and those of inline modules (whose signal types
    // would clash at the top level).
    let mut items = file.items;
    while let Some(item) = items.pop() {
        let item = match item {
            syn::Item::Trait(item) => item,
            syn::Item::Mod(module) => {
                items.extend(module.content.map(|(_, inner)| inner).unwrap_or_default());
                continue;
            }
            _ => continue,
        };
        let mut interface = None;
        for attr in item.attrs.iter().filter(|a| a.path().is_ident("proxy")) {
            attr.parse_nested_meta(|meta| {
                let value: syn::LitStr = meta.value()?.parse()?;
                if meta.path.is_ident("interface") {
                    interface = Some(value.value());
                }
                Ok(())
            })
            .unwrap();
        }
        let Some(interface) = interface else {
            continue;
        };
        let members = item
            .items
            .iter()
            .filter_map(|i| match i {
                syn::TraitItem::Fn(f) => Some(f.sig.ident.to_string()),
                _ => None,
            })
            .collect();
        traits.push((item.ident.to_string(), interface, members));
    }
    traits
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Method,
    Get,
    Set,
    Signal,
}

/// A call the fake server received, and what it made of it.
#[derive(Debug)]
struct Wire {
    kind: Kind,
    key: Key,
    destination: Option<String>,
    /// Why the call breaks the contract, if it does.
    verdict: Result<(), String>,
}

/// What the fake server saw, in order.
type Log = Arc<Mutex<Vec<Wire>>>;

/// A value of each type, as plain as it gets.
fn value_of(signature: &Signature) -> Variant<'static> {
    match signature {
        Signature::U8 => Variant::U8(0),
        Signature::Bool => Variant::Bool(false),
        Signature::I16 => Variant::I16(0),
        Signature::U16 => Variant::U16(0),
        Signature::I32 => Variant::I32(0),
        Signature::U32 => Variant::U32(0),
        Signature::I64 => Variant::I64(0),
        Signature::U64 => Variant::U64(0),
        Signature::F64 => Variant::F64(0.0),
        Signature::Str => Variant::from(""),
        Signature::Signature => Variant::Signature(Signature::Str),
        Signature::ObjectPath => Variant::ObjectPath(ObjectPath::from_static_str_unchecked("/")),
        Signature::Variant => Variant::Variant(Box::new(Variant::U8(0))),
        Signature::Fd => Variant::Fd(Fd::from(std::os::fd::OwnedFd::from(
            File::open("/dev/null").unwrap(),
        ))),
        Signature::Array(child) => Variant::Array(Array::new(child)),
        Signature::Dict { key, value } => Variant::Dict(Dict::new(key, value)),
        Signature::Structure(fields) => Variant::Structure(
            fields
                .iter()
                .fold(Structure::builder(), |s, f| s.append_field(value_of(f)))
                .build()
                .unwrap(),
        ),
        Signature::Unit => panic!("no value has the unit type"),
    }
}

/// A message body holding a value of each of `types`.
fn body_of(types: &[String]) -> Option<Structure<'static>> {
    let fields = types
        .iter()
        .map(|t| value_of(&Signature::from_str(t).unwrap()));
    let structure = fields.fold(Structure::builder(), |s, v| s.append_field(v));
    (!types.is_empty()).then(|| structure.build().unwrap())
}

fn build(builder: zbus::message::Builder<'_>, body: Option<Structure<'_>>) -> Message {
    match body {
        Some(body) => builder.build(&body),
        None => builder.build(&()),
    }
    .unwrap()
}

/// The signature `types` make together.
fn joined(types: &[String]) -> Signature {
    Signature::from_str(&types.concat()).unwrap()
}

/// The fake server's answer to `msg`, and what it saw.
fn answer(contract: &Contract, msg: &Message) -> (Option<Wire>, Message) {
    let header = msg.header();
    let interface = header
        .interface()
        .map(|i| i.to_string())
        .unwrap_or_default();
    let member = header.member().map(|m| m.to_string()).unwrap_or_default();
    let destination = header.destination().map(|d| d.to_string());
    let body = msg.body();
    let error = |name: &str, text: String| {
        build(
            Message::error(&header, name.to_owned()),
            Some(Structure::from((text,))),
        )
    };
    // Each arm: what the call is, and the reply if it keeps the contract.
    let (kind, key, outcome) = match (interface.as_str(), member.as_str()) {
        // A signal stream asks who owns the proxy's well-known name; no
        // one, on a peer-to-peer connection: it takes every signal then.
        ("org.freedesktop.DBus", "GetNameOwner") => {
            let text = "a peer-to-peer connection".to_owned();
            return (
                None,
                error("org.freedesktop.DBus.Error.NameHasNoOwner", text),
            );
        }
        (PROPERTIES, "Get") => {
            let (interface, name): (String, String) = body.deserialize().unwrap();
            let key = (interface, name);
            let outcome = match contract.properties.get(&key) {
                None => Err("not a property of the contract".to_owned()),
                Some((_, access)) if !access.contains("read") => {
                    Err(format!("read, but the contract's access is {access}"))
                }
                Some((ty, _)) => {
                    let ty = Signature::from_str(ty).unwrap();
                    let value = Variant::Variant(Box::new(value_of(&ty)));
                    let body = Structure::builder().append_field(value).build().unwrap();
                    Ok(build(Message::method_return(&header), Some(body)))
                }
            };
            (Kind::Get, key, outcome)
        }
        (PROPERTIES, "Set") => {
            let (interface, name, value): (String, String, OwnedVariant) =
                body.deserialize().unwrap();
            let key = (interface, name);
            let sent = value.value_signature().to_string();
            let outcome = match contract.properties.get(&key) {
                None => Err("not a property of the contract".to_owned()),
                Some((_, access)) if !access.contains("write") => {
                    Err(format!("written, but the contract's access is {access}"))
                }
                Some((ty, _)) if Signature::from_str(ty).unwrap() != *value.value_signature() => {
                    Err(format!(
                        "written as '{sent}', the contract's type is '{ty}'"
                    ))
                }
                Some(_) => Ok(build(Message::method_return(&header), None)),
            };
            (Kind::Set, key, outcome)
        }
        _ => {
            let key = (interface, member);
            let sent = body.signature();
            let outcome = match contract.methods.get(&key) {
                None => Err("not a method of the contract".to_owned()),
                Some((ins, _)) if joined(ins) != *sent => Err(format!(
                    "sends '{}', the contract's in-signature is '{}'",
                    sent.to_string_no_parens(),
                    ins.concat()
                )),
                Some((_, outs)) => Ok(build(Message::method_return(&header), body_of(outs))),
            };
            (Kind::Method, key, outcome)
        }
    };
    let (verdict, reply) = match outcome {
        Ok(reply) => (Ok(()), reply),
        Err(why) => {
            let text = format!("{}.{}: {why}", key.0, key.1);
            let name = "org.freedesktop.DBus.Error.UnknownMethod";
            (Err(why), error(name, text))
        }
    };
    let wire = Wire {
        kind,
        key,
        destination,
        verdict,
    };
    (Some(wire), reply)
}

/// Serves `stream` until the connection closes.
async fn serve(server: Connection, mut stream: MessageStream, contract: Arc<Contract>, log: Log) {
    while let Some(Ok(msg)) = stream.next().await {
        if msg.message_type() != MessageType::MethodCall {
            continue;
        }
        let (wire, reply) = answer(&contract, &msg);
        if let Some(wire) = wire {
            log.lock().unwrap().push(wire);
        }
        if server.send(&reply).await.is_err() {
            break;
        }
    }
}

/// Lower case without `_`: how a Rust name and a D-Bus name compare.
fn plain(name: &str) -> String {
    name.replace('_', "").to_lowercase()
}

/// The test's side: what it exercised, and what went wrong.
struct Run {
    server: Connection,
    contract: Arc<Contract>,
    log: Log,
    /// (proxy variable, i.e. trait in lower case; Rust member).
    called: BTreeSet<(String, String)>,
    met: BTreeSet<(Kind, Key)>,
    failures: Vec<String>,
}

impl Run {
    /// Runs `call` of proxy member `proxy.member` and checks what reached
    /// the server.
    async fn call(
        &mut self,
        proxy: &str,
        member: &str,
        call: impl Future<Output = zbus::Result<()>>,
    ) {
        let name = format!("{proxy}.{member}");
        self.called.insert((proxy.to_owned(), member.to_owned()));
        self.log.lock().unwrap().clear();
        let result = call.await;
        let wire: Vec<Wire> = self.log.lock().unwrap().drain(..).collect();
        let [wire] = &wire[..] else {
            self.failures
                .push(format!("{name}: {} calls reached the server", wire.len()));
            return;
        };
        let (interface, dbus_name) = &wire.key;
        if let Err(why) = &wire.verdict {
            let kind = wire.kind;
            self.failures
                .push(format!("{name} ({kind:?} {interface}.{dbus_name}): {why}"));
            return;
        }
        if let Err(e) = result {
            self.failures.push(format!(
                "{name}: the reply from the contract did not decode: {e}"
            ));
        }
        let expected = match wire.kind {
            Kind::Set => format!("set{}", plain(dbus_name)),
            _ => plain(dbus_name),
        };
        if plain(member) != expected {
            self.failures
                .push(format!("{name} reaches {:?} {dbus_name}", wire.kind));
        }
        if wire.destination.as_deref() != Some(BUS_NAME) {
            let to = &wire.destination;
            self.failures.push(format!("{name} is sent to {to:?}"));
        }
        self.met.insert((wire.kind, wire.key.clone()));
    }

    /// Emits contract signal `interface.signal` at `path` and expects it
    /// on `stream`, the proxy's `receive_*` of `proxy.member`, decoded by
    /// `args`.
    #[allow(clippy::too_many_arguments)]
    async fn signal<S: Stream + Unpin>(
        &mut self,
        proxy: &str,
        member: &str,
        path: &str,
        interface: &str,
        signal: &str,
        mut stream: S,
        args: impl Fn(&S::Item) -> zbus::Result<()>,
    ) {
        let name = format!("{proxy}.{member}");
        self.called.insert((proxy.to_owned(), member.to_owned()));
        let key = (interface.to_owned(), signal.to_owned());
        let Some(types) = self.contract.signals.get(&key) else {
            let why = "not a signal of the contract";
            self.failures
                .push(format!("{name} (signal {interface}.{signal}): {why}"));
            return;
        };
        let emitted = build(Message::signal(path, interface, signal), body_of(types));
        self.server.send(&emitted).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(received)) => {
                if let Err(e) = args(&received) {
                    let sig = types.concat();
                    self.failures.push(format!(
                        "{name}: signal {signal} ('{sig}') did not decode: {e}"
                    ));
                }
            }
            Ok(None) | Err(_) => self
                .failures
                .push(format!("{name}: signal {signal} did not arrive")),
        }
        if plain(member) != plain(signal) {
            self.failures.push(format!("{name} is signal {signal}"));
        }
        self.met.insert((Kind::Signal, key));
    }
}

/// `call!(run, proxy.member(args…))`: `proxy` is the variable of the
/// proxy, named after its trait in lower case.
macro_rules! call {
    ($run:ident, $proxy:ident . $member:ident ( $($arg:expr),* $(,)? )) => {
        $run.call(stringify!($proxy), stringify!($member), async {
            $proxy.$member($($arg),*).await.map(drop)
        })
        .await
    };
}

#[tokio::test]
async fn proxies_match_the_committed_contract() {
    let traits = proxy_source();
    assert!(!traits.is_empty(), "no #[proxy] trait in src/proxy.rs");
    let interfaces = traits.iter().map(|(_, i, _)| i.clone()).collect();
    let contract = Arc::new(Contract::parse(INTROSPECTION_XML, &interfaces));

    let (server_socket, client_socket) = UnixStream::pair().unwrap();
    let guid = Guid::generate();
    let (server, client) = tokio::try_join!(
        Builder::unix_stream(server_socket)
            .server(guid)
            .p2p()
            .build(),
        Builder::unix_stream(client_socket).p2p().build(),
    )
    .unwrap();
    let log = Log::default();
    let stream = MessageStream::from(&server);
    tokio::spawn(serve(server.clone(), stream, contract.clone(), log.clone()));
    let mut run = Run {
        server,
        contract,
        log,
        called: BTreeSet::new(),
        met: BTreeSet::new(),
        failures: Vec::new(),
    };

    let manager = ManagerProxy::builder(&client)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    let images = ImagesProxy::builder(&client)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    let path = domain_path(uuid::Uuid::nil());
    let domain = DomainProxy::builder(&client)
        .path(path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    let net_path = network_path(uuid::Uuid::nil());
    let network = NetworkProxy::builder(&client)
        .path(net_path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    // The default path and service of the proxies that have them.
    for proxy in [manager.inner(), images.inner()] {
        assert_eq!(proxy.path().as_str(), MANAGER_PATH);
    }

    call!(run, manager.define_xml("<domain/>"));
    call!(run, manager.create_xml("<domain/>"));
    call!(run, manager.list_domains());
    call!(run, manager.list_domain_summaries());
    call!(run, manager.shutdown_all(HashMap::new()));
    call!(
        run,
        manager.plan_apply(&[("web.xml", "<domain/>", true)], HashMap::new())
    );
    call!(
        run,
        manager.apply(&[("web.xml", "<domain/>", true)], HashMap::new())
    );
    call!(run, manager.lookup_by_name("web"));
    call!(
        run,
        manager.lookup_by_uuid("00000000-0000-0000-0000-000000000000")
    );
    call!(run, manager.start_domain("web"));
    call!(run, manager.shutdown_domain("web", 10, "signal"));
    call!(run, manager.destroy_domain("web"));
    call!(run, manager.reboot_domain("web", 10, ""));
    call!(run, manager.reset_domain("web"));
    call!(run, manager.suspend_domain("web"));
    call!(run, manager.resume_domain("web"));
    call!(run, manager.get_capabilities());
    call!(run, manager.version());
    call!(run, manager.network_define_xml("<network/>"));
    call!(run, manager.network_create_xml("<network/>"));
    call!(run, manager.list_networks());
    call!(run, manager.network_lookup_by_name("lan"));
    call!(
        run,
        manager.network_lookup_by_uuid("00000000-0000-0000-0000-000000000000")
    );

    let null = File::open("/dev/null").unwrap();
    let fd = || Fd::from(null.as_fd());
    call!(run, images.import_tarball(fd(), HashMap::new()));
    call!(run, images.import_oci("/srv/oci", HashMap::new()));
    call!(run, images.list_images());
    call!(run, images.inspect("base"));
    call!(run, images.remove("base"));
    call!(run, images.tag("base", "mine"));
    call!(run, images.untag("mine"));
    call!(run, images.export("base", fd(), HashMap::new()));

    call!(run, domain.name());
    call!(run, domain.uuid());
    call!(run, domain.type_());
    call!(run, domain.persistent());
    call!(run, domain.autostart());
    call!(run, domain.set_autostart(true));
    call!(run, domain.state());
    call!(run, domain.state_reason());
    call!(run, domain.pid());
    call!(run, domain.start_time());
    call!(run, domain.security_label());
    call!(run, domain.user_namespace());
    call!(run, domain.host_ids());
    call!(run, domain.get_xml(0));
    call!(run, domain.get_interface_addresses(0, 0));
    call!(run, domain.attach_device("<interface/>", 0));
    call!(run, domain.update_device("<disk/>", 0));
    call!(run, domain.detach_device("<interface/>", 0));
    call!(run, domain.get_interface_stats("eth0"));
    call!(run, domain.start());
    call!(run, domain.shutdown(0, ""));
    call!(run, domain.destroy());
    call!(run, domain.reboot(0, ""));
    call!(run, domain.reset());
    call!(run, domain.suspend());
    call!(run, domain.resume());
    call!(run, domain.open_console(""));
    call!(run, domain.open_console_log(HashMap::new()));
    call!(
        run,
        domain.enter(&["true"], &[], fd(), fd(), fd(), HashMap::new())
    );
    call!(run, domain.enter_terminal(&["sh"], &[], HashMap::new()));
    call!(run, domain.get_stats());
    call!(run, domain.send_process_signal(1, "SIGTERM"));
    call!(run, domain.set_memory_parameters(HashMap::new(), 0));
    call!(run, domain.get_memory_parameters(0));
    call!(run, domain.set_scheduler_parameters(HashMap::new(), 0));
    call!(run, domain.get_scheduler_parameters(0));
    call!(run, domain.set_blkio_parameters(HashMap::new(), 0));
    call!(run, domain.get_blkio_parameters(0));
    call!(run, domain.set_numa_parameters(HashMap::new(), 0));
    call!(run, domain.set_memory(65536, 0));
    call!(run, domain.set_max_memory(65536, 0));
    call!(run, domain.pin_emulator("0", 0));
    call!(run, domain.get_emulator_pin(0));
    call!(run, domain.set_pids_limit(100, 0));
    call!(run, domain.get_pids_limit(0));
    call!(run, domain.get_numa_parameters(0));
    call!(run, domain.undefine(0));
    call!(run, domain.commit("snapshot", 0));

    call!(run, network.name());
    call!(run, network.uuid());
    call!(run, network.active());
    call!(run, network.persistent());
    call!(run, network.autostart());
    call!(run, network.set_autostart(true));
    call!(run, network.bridge());
    call!(run, network.get_xml(0));
    call!(run, network.undefine());
    call!(run, network.start());
    call!(run, network.destroy(1));
    call!(run, network.get_dhcp_leases("", 0));

    let progress = images.receive_progress().await.unwrap();
    let interface = images.inner().interface().to_string();
    run.signal(
        "images",
        "progress",
        MANAGER_PATH,
        &interface,
        "Progress",
        progress,
        |s| s.args().map(drop),
    )
    .await;
    let lifecycle = domain.receive_lifecycle().await.unwrap();
    let interface = domain.inner().interface().to_string();
    run.signal(
        "domain",
        "lifecycle",
        path.as_str(),
        &interface,
        "Lifecycle",
        lifecycle,
        |s| s.args().map(drop),
    )
    .await;

    let lifecycle = network.receive_lifecycle().await.unwrap();
    let interface = network.inner().interface().to_string();
    run.signal(
        "network",
        "lifecycle",
        net_path.as_str(),
        &interface,
        "Lifecycle",
        lifecycle,
        |s| s.args().map(drop),
    )
    .await;

    let mut failures = std::mem::take(&mut run.failures);
    for (name, _, members) in &traits {
        for member in members {
            if !run.called.contains(&(name.to_lowercase(), member.clone())) {
                failures.push(format!(
                    "{name}::{member} is not exercised: add it to this test"
                ));
            }
        }
    }
    for (kind, (interface, name)) in run.contract.members().difference(&run.met) {
        failures.push(format!(
            "the contract's {interface}.{name} ({kind:?}) has no proxy member"
        ));
    }
    assert!(
        failures.is_empty(),
        "the proxies in daemon/api/src/proxy.rs differ from \
         daemon/data/org.lxvirt.lxvirt1.xml (the XML is the contract):\n{}",
        failures.join("\n")
    );
}
