//! proptest strategies producing valid domain definitions, for round-trip
//! properties here and elsewhere in the crate's tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use uuid::Uuid;

use super::network::{
    Bridge, Dhcp, DhcpHost, DhcpRange, Dns, DnsForwarder, DnsHost, Forward, ForwardMode, Ipv4Range,
    MAX_BRIDGE_DELAY, Nat, NetworkDomain, NetworkIp, PortRange,
};
use super::*;

/// Any valid definition, LXC or KVM/QEMU, without live data.
pub fn arb_domain_def() -> impl Strategy<Value = DomainDef> {
    // Boxed parts: unboxed, the value trees of a whole domain outgrow a
    // test thread's stack.
    prop_oneof![3 => arb_lxc_def().boxed(), 1 => arb_vm_def().boxed()]
}

pub fn arb_name() -> impl Strategy<Value = DomainName> {
    "[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,20}".prop_map(|s| DomainName::new(&s).unwrap())
}

fn arb_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(|n| Uuid::from_u128(n | 1))
}

/// One line of text exercising escaping.
fn arb_line() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&'\".,;:!?é€_=-]{0,24}"
}

/// Text that may span lines.
fn arb_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 <>&'\"\n\t.,;:!?é€_-]{0,40}"
}

fn arb_path() -> impl Strategy<Value = PathBuf> {
    vec("[a-z0-9_][a-z0-9_.-]{0,7}", 1..4).prop_map(|parts| {
        let mut p = PathBuf::from("/");
        for part in parts {
            p.push(part);
        }
        p
    })
}

fn arb_ifname() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,14}"
}

fn arb_size(max_kib: u64) -> impl Strategy<Value = u64> {
    (1..=max_kib).prop_map(|k| k * 1024)
}

fn arb_cpuset() -> impl Strategy<Value = CpuSet> {
    btree_set(0u32..64, 1..6).prop_map(|ids| CpuSet::from_ids(ids).unwrap())
}

fn arb_context() -> impl Strategy<Value = String> {
    (
        select(vec!["system_u", "unconfined_u"]),
        select(vec!["system_r", "object_r"]),
        "[a-z_]{1,12}_t",
        option::of((0u32..1024, 0u32..1024)),
    )
        .prop_map(|(u, r, t, cats)| match cats {
            None => format!("{u}:{r}:{t}:s0"),
            Some((a, b)) => format!("{u}:{r}:{t}:s0:c{a},c{b}"),
        })
}

fn arb_metadata() -> impl Strategy<Value = Option<Metadata>> {
    option::of(
        select(vec![
            "<a:x xmlns:a='urn:a'>v &amp; w</a:x>",
            "\n    <app:info xmlns:app='https://example.org/app/1'>\n      <app:owner>web</app:owner>\n    </app:info>\n  ",
            "<b:y xmlns:b=\"urn:b\" b:k='1'/><!-- note --><c:z xmlns:c='urn:c'><![CDATA[<raw>]]></c:z>",
        ])
        .prop_map(|s| Metadata(s.to_owned())),
    )
}

/// Name, uuid, title, description, metadata, memory, current memory, vcpu.
#[allow(clippy::type_complexity)]
fn arb_common() -> impl Strategy<
    Value = (
        DomainName,
        Uuid,
        Option<String>,
        Option<String>,
        Option<Metadata>,
        (u64, u64),
        Vcpu,
    ),
> {
    (
        arb_name(),
        arb_uuid(),
        option::of(arb_line()),
        option::of(arb_text()),
        arb_metadata(),
        (1u64..=(1 << 24))
            .prop_flat_map(|mem| (Just(mem * 1024), (1..=mem).prop_map(|c| c * 1024))),
        (
            1u32..=64,
            select(VcpuPlacement::ALL.to_vec()),
            option::of(arb_cpuset()),
        )
            .prop_map(|(count, placement, cpuset)| Vcpu {
                count,
                placement,
                cpuset,
                current: None,
            }),
    )
}

/// `vm`: with `preserve-running`, which containers refuse.
fn arb_lifecycle(
    vm: bool,
) -> impl Strategy<Value = (LifecycleAction, LifecycleAction, LifecycleAction)> {
    let plain = LifecycleAction::ALL[..4].to_vec();
    let crash = LifecycleAction::ALL
        .iter()
        .copied()
        .filter(|a| vm || *a != LifecycleAction::PreserveRunning)
        .collect::<Vec<_>>();
    (select(plain.clone()), select(plain), select(crash))
}

fn arb_clock(names: Vec<TimerName>) -> impl Strategy<Value = Clock> {
    let n = names.len();
    (
        select(ClockOffset::ALL.to_vec()),
        subsequence(names, 0..=n).prop_flat_map(|names| {
            let len = names.len();
            (Just(names), vec(option::of(any::<bool>()), len))
        }),
    )
        .prop_map(|(offset, (names, present))| Clock {
            offset,
            timers: names
                .into_iter()
                .zip(present)
                .map(|(name, present)| Timer {
                    name,
                    present,
                    tickpolicy: None,
                    frequency: None,
                    catchup: None,
                })
                .collect(),
        })
}

fn arb_seclabel() -> impl Strategy<Value = Option<SecLabel>> {
    let models = || option::of(Just(SecModel::Selinux));
    option::of(prop_oneof![
        (models(), option::of(arb_context())).prop_map(|(model, baselabel)| SecLabel {
            label_type: SecLabelType::Dynamic,
            model,
            relabel: true,
            baselabel,
            label: None,
            live: LiveLabels::default(),
        }),
        (models(), any::<bool>(), arb_context()).prop_map(|(model, relabel, label)| SecLabel {
            label_type: SecLabelType::Static,
            model,
            relabel,
            baselabel: None,
            label: Some(label),
            live: LiveLabels::default(),
        }),
        option::of(select(SecModel::ALL.to_vec())).prop_map(|model| SecLabel {
            label_type: SecLabelType::None,
            model,
            relabel: false,
            baselabel: None,
            label: None,
            live: LiveLabels::default(),
        }),
    ])
}

fn arb_idref() -> impl Strategy<Value = IdRef> {
    prop_oneof![
        "[a-z_][a-z0-9_.-]{0,10}".prop_map(IdRef::Name),
        any::<u32>().prop_map(IdRef::Id),
    ]
}

fn arb_exe_os() -> impl Strategy<Value = Os> {
    (
        option::of(select(vec!["x86_64".to_owned(), "aarch64".to_owned()])),
        arb_path(),
        vec(arb_line(), 0..3),
        btree_map("[A-Z_][A-Z0-9_]{0,8}", arb_line(), 0..3),
        option::of(arb_path()),
        option::of(arb_idref()),
        option::of(arb_idref()),
        option::of(arb_text()),
    )
        .prop_map(
            |(arch, init, initargs, env, initdir, inituser, initgroup, cmdline)| {
                Os::Exe(ExeOs {
                    arch,
                    init,
                    initargs,
                    initenv: env.into_iter().collect(),
                    initdir,
                    inituser,
                    initgroup,
                    cmdline,
                })
            },
        )
}

fn arb_idmap_list() -> impl Strategy<Value = Vec<IdMapEntry>> {
    vec((1u32..1000, 1u32..70000, 0u32..1_000_000), 1..4).prop_map(|parts| {
        let mut start = 0u32;
        let mut out = Vec::new();
        for (gap, count, target) in parts {
            out.push(IdMapEntry {
                start,
                target,
                count,
            });
            start += count + gap;
        }
        out
    })
}

fn arb_features_lxc() -> impl Strategy<Value = Features> {
    (
        any::<bool>(),
        option::of((
            select(CapsPolicy::ALL.to_vec()),
            btree_map(select(Capability::ALL.to_vec()), any::<bool>(), 0..5),
        )),
    )
        .prop_map(|(privnet, caps)| Features {
            privnet,
            capabilities: caps.map(|(policy, states)| Capabilities { policy, states }),
            ..Features::default()
        })
}

fn arb_fs_source() -> impl Strategy<Value = FsSource> {
    prop_oneof![
        arb_path().prop_map(|dir| FsSource::Mount { dir }),
        arb_path().prop_map(|dir| FsSource::Bind { dir }),
        arb_size(1 << 20).prop_map(|usage| FsSource::Ram { usage }),
        arb_path().prop_map(|dev| FsSource::Block { dev }),
        (
            arb_path(),
            option::of(prop_oneof![
                option::of(Just(ImageFormat::Raw)).prop_map(|format| FsDriver {
                    driver_type: FsDriverType::Loop,
                    format
                }),
                option::of(select(ImageFormat::ALL.to_vec())).prop_map(|format| FsDriver {
                    driver_type: FsDriverType::Nbd,
                    format
                }),
            ])
        )
            .prop_map(|(file, driver)| FsSource::File { file, driver }),
    ]
}

fn arb_filesystems() -> impl Strategy<Value = Vec<Filesystem>> {
    (
        option::of(prop_oneof![
            arb_path().prop_map(|dir| FsSource::Mount { dir }),
            "[a-z][a-z0-9._-]{0,20}".prop_map(|volume| FsSource::Volume {
                pool: IMAGE_POOL.to_owned(),
                volume,
            }),
        ]),
        vec(
            (
                arb_fs_source(),
                option::of(Just(AccessMode::Passthrough)),
                arb_path(),
                any::<bool>(),
            ),
            0..4,
        ),
    )
        .prop_map(|(root, list)| {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            if let Some(source) = root {
                seen.insert(PathBuf::from("/"));
                out.push(Filesystem {
                    source,
                    accessmode: None,
                    target: PathBuf::from("/"),
                    readonly: false,
                });
            }
            for (source, accessmode, target, readonly) in list {
                if seen.insert(target.clone()) {
                    out.push(Filesystem {
                        source,
                        accessmode,
                        target,
                        readonly,
                    });
                }
            }
            out
        })
}

fn arb_mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(|mut b| {
        b[0] &= 0xfe;
        MacAddr(b)
    })
}

pub(crate) fn arb_ip_pair() -> impl Strategy<Value = (IpAddr, u8, IpAddr)> {
    prop_oneof![
        (any::<u32>(), 0u8..=32, any::<u32>()).prop_map(|(a, p, b)| (
            IpAddr::V4(Ipv4Addr::from(a)),
            p,
            IpAddr::V4(Ipv4Addr::from(b))
        )),
        (any::<u128>(), 0u8..=128, any::<u128>()).prop_map(|(a, p, b)| (
            IpAddr::V6(Ipv6Addr::from(a)),
            p,
            IpAddr::V6(Ipv6Addr::from(b))
        )),
    ]
}

/// Addresses and routes of one device; route addresses are network
/// addresses for their prefix.
fn arb_ips_and_routes(max: usize) -> impl Strategy<Value = (Vec<IpConfig>, Vec<Route>)> {
    (
        vec(
            (arb_ip_pair(), any::<bool>(), any::<bool>()).prop_map(
                |((address, prefix, peer), has_prefix, has_peer)| IpConfig {
                    address,
                    prefix: has_prefix.then_some(prefix),
                    peer: has_peer.then_some(peer),
                },
            ),
            0..=max,
        ),
        vec(
            (arb_ip_pair(), any::<bool>()).prop_map(|((address, prefix, gateway), has)| {
                let prefix = has.then_some(prefix);
                Route {
                    address: addr::network_address(address, prefix.unwrap_or(0)),
                    prefix,
                    gateway,
                }
            }),
            0..max,
        ),
    )
}

fn arb_rate(floor_allowed: bool) -> impl Strategy<Value = BandwidthRate> {
    let value = || 1..=MAX_BANDWIDTH;
    (
        option::of(value()),
        option::of(0..=1_000_000u64),
        option::of(value()),
        option::of(value()),
    )
        .prop_map(move |(average, extra, burst, floor)| {
            let floor = floor.filter(|_| floor_allowed);
            let average = match (average, floor) {
                (None, None) => Some(1000),
                (a, _) => a,
            };
            BandwidthRate {
                average,
                peak: average
                    .zip(extra)
                    .map(|(a, e)| a.saturating_add(e).min(MAX_BANDWIDTH)),
                burst: burst.filter(|_| average.is_some()),
                floor,
            }
        })
}

fn arb_bandwidth(floor_allowed: bool) -> impl Strategy<Value = Option<Bandwidth>> {
    (
        option::of(arb_rate(floor_allowed)),
        option::of(arb_rate(false)),
    )
        .prop_map(|(inbound, outbound)| {
            let bw = Bandwidth { inbound, outbound };
            (bw != Bandwidth::default()).then_some(bw)
        })
}

fn arb_vlan() -> impl Strategy<Value = Vlan> {
    btree_set(0..=MAX_VLAN_ID, 1..4)
        .prop_flat_map(|ids| {
            (
                Just(ids.into_iter().collect::<Vec<_>>()).prop_shuffle(),
                any::<bool>(),
                option::of((
                    any::<prop::sample::Index>(),
                    select(NativeMode::ALL.to_vec()),
                )),
            )
        })
        .prop_map(|(ids, trunk, native)| {
            let native_at = native.map(|(i, mode)| (i.index(ids.len()), mode));
            Vlan {
                trunk: trunk || ids.len() > 1,
                tags: ids
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| VlanTag {
                        id,
                        native_mode: native_at.filter(|(at, _)| *at == i).map(|(_, m)| m),
                    })
                    .collect(),
            }
        })
}

fn arb_interface_source() -> impl Strategy<Value = InterfaceSource> {
    prop_oneof![
        (
            "[a-z][a-z0-9_-]{0,10}",
            option::of("[a-z][a-z0-9_.-]{0,10}")
        )
            .prop_map(|(network, portgroup)| InterfaceSource::Network { network, portgroup }),
        arb_ifname().prop_map(|bridge| InterfaceSource::Bridge { bridge }),
        arb_ips_and_routes(2).prop_map(|(ips, routes)| InterfaceSource::Ethernet { ips, routes }),
        (arb_ifname(), select(DirectMode::ALL.to_vec()))
            .prop_map(|(dev, mode)| InterfaceSource::Direct { dev, mode }),
    ]
}

fn arb_interface(lxc: bool) -> BoxedStrategy<Interface> {
    let lxc_parts = if lxc {
        (option::of(arb_ifname()), arb_ips_and_routes(2), Just(None)).boxed()
    } else {
        (
            Just(None),
            Just((Vec::new(), Vec::new())),
            option::of(select(NicModel::ALL.to_vec())),
        )
            .boxed()
    };
    arb_interface_source()
        .prop_flat_map(move |source| {
            let network = matches!(source, InterfaceSource::Network { .. });
            let shaped = !(lxc && matches!(source, InterfaceSource::Direct { .. }));
            let tagged = !matches!(source, InterfaceSource::Ethernet { .. });
            (
                Just(source),
                option::of(arb_mac()),
                option::of(arb_ifname()),
                lxc_parts.clone(),
                option::of(MIN_MTU..=u16::MAX),
                option::of(select(LinkState::ALL.to_vec())),
                arb_bandwidth(network).prop_map(move |b| b.filter(|_| shaped)),
                option::of(arb_vlan()).prop_map(move |v| v.filter(|_| tagged)),
            )
                .prop_map(
                    |(
                        source,
                        mac,
                        target_dev,
                        (guest_dev, (ips, routes), model),
                        mtu,
                        link_state,
                        bandwidth,
                        vlan,
                    )| Interface {
                        source,
                        mac,
                        target_dev,
                        guest_dev,
                        model,
                        ips,
                        routes,
                        mtu,
                        link_state,
                        bandwidth,
                        vlan,
                        boot_order: None,
                        address: None,
                        alias: None,
                        kept: Vec::new(),
                    },
                )
        })
        .boxed()
}

/// Drops the MAC addresses and device names an earlier interface has.
fn unique_interfaces(mut list: Vec<Interface>) -> Vec<Interface> {
    let mut macs = BTreeSet::new();
    let mut targets = BTreeSet::new();
    let mut guests = BTreeSet::new();
    for i in &mut list {
        i.mac = i.mac.filter(|m| macs.insert(*m));
        i.target_dev = i.target_dev.take().filter(|t| targets.insert(t.clone()));
        i.guest_dev = i.guest_dev.take().filter(|g| guests.insert(g.clone()));
    }
    list
}

fn arb_hostdev() -> impl Strategy<Value = Hostdev> {
    let ids = option::of(
        (any::<u16>(), any::<u16>()).prop_map(|(vendor, product)| UsbIds { vendor, product }),
    );
    let addr = (any::<u32>(), any::<u32>()).prop_map(|(bus, device)| UsbAddress { bus, device });
    prop_oneof![
        arb_path().prop_map(|block| Hostdev::Storage { block }),
        arb_path().prop_map(|char_dev| Hostdev::Misc { char_dev }),
        (arb_ifname(), arb_ips_and_routes(2)).prop_map(|(interface, (ips, routes))| {
            Hostdev::Net {
                interface,
                ips,
                routes,
            }
        }),
        (ids, option::of(addr.clone())).prop_map(|(ids, address)| match (ids, address) {
            (None, None) => Hostdev::Usb {
                ids: None,
                address: Some(UsbAddress { bus: 1, device: 2 }),
            },
            (ids, address) => Hostdev::Usb { ids, address },
        }),
    ]
}

fn arb_ports() -> impl Strategy<Value = Vec<u32>> {
    btree_set(0u32..16, 0..3).prop_shuffle_vec()
}

/// `prop_shuffle` for a set turned into a vector.
trait ShuffleSet {
    fn prop_shuffle_vec(self) -> BoxedStrategy<Vec<u32>>;
}

impl<S: Strategy<Value = BTreeSet<u32>> + 'static> ShuffleSet for S {
    fn prop_shuffle_vec(self) -> BoxedStrategy<Vec<u32>> {
        self.prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle()
            .boxed()
    }
}

/// Keeps the first network hostdev of each host interface.
fn unique_hostdevs(list: Vec<Hostdev>) -> Vec<Hostdev> {
    let mut seen = BTreeSet::new();
    list.into_iter()
        .filter(|h| match h {
            Hostdev::Net { interface, .. } => seen.insert(interface.clone()),
            _ => true,
        })
        .collect()
}

fn unique_disks(list: Vec<Disk>) -> Vec<Disk> {
    let mut seen = BTreeSet::new();
    list.into_iter()
        .filter(|d| seen.insert(d.target_dev.clone()))
        .collect()
}

fn arb_lxc_devices() -> impl Strategy<Value = Devices> {
    (
        option::of(arb_path()),
        arb_filesystems(),
        vec(
            (
                arb_path(),
                "vd[a-z]",
                option::of(select(DiskBus::ALL.to_vec())),
            )
                .prop_map(|(dev, target_dev, target_bus)| Disk {
                    source: DiskSource::Block(Some(dev)),
                    device: DiskDevice::Disk,
                    model: None,
                    driver: None,
                    target_dev,
                    target_bus,
                    target_kept: Vec::new(),
                    readonly: false,
                    boot_order: None,
                    serial: None,
                    shareable: false,
                    transient: false,
                    address: None,
                    alias: None,
                    backing_store: None,
                    kept: Vec::new(),
                }),
            0..3,
        ),
        vec(arb_interface(true), 0..3),
        vec(arb_hostdev(), 0..3),
        arb_ports(),
    )
        .prop_map(
            |(emulator, filesystems, disks, interfaces, hostdevs, ports)| Devices {
                emulator,
                filesystems,
                disks: unique_disks(disks),
                interfaces: unique_interfaces(interfaces),
                hostdevs: unique_hostdevs(hostdevs),
                serials: Vec::new(),
                consoles: ports
                    .into_iter()
                    .map(|port| Console {
                        chardev_type: ChardevType::Pty,
                        kept: Vec::new(),
                        address: None,
                        alias: None,
                        target_type: ConsoleTargetType::Lxc,
                        port,
                    })
                    .collect(),
                ..Devices::default()
            },
        )
}

fn arb_lxc_namespace() -> impl Strategy<Value = Option<LxcNamespace>> {
    let share = |netns: bool| {
        let mut kinds = vec![
            (NsShareType::Name, "[a-z][a-z0-9_-]{0,10}".boxed()),
            (
                NsShareType::Pid,
                (1u32..).prop_map(|n| n.to_string()).boxed(),
            ),
        ];
        if netns {
            kinds.push((NsShareType::Netns, "[a-z][a-z0-9_.-]{0,10}".boxed()));
        }
        let strategies: Vec<BoxedStrategy<NsShare>> = kinds
            .into_iter()
            .map(|(share_type, value)| {
                value
                    .prop_map(move |value| NsShare { share_type, value })
                    .boxed()
            })
            .collect();
        option::of(proptest::strategy::Union::new(strategies))
    };
    option::of((share(true), share(false), share(false)).prop_map(
        |(sharenet, shareipc, shareuts)| LxcNamespace {
            sharenet,
            shareipc,
            shareuts,
        },
    ))
}

fn arb_seccomp() -> impl Strategy<Value = Option<Seccomp>> {
    let names = [
        "uname",
        "keyctl",
        "ptrace",
        "sethostname",
        "mount",
        "personality",
    ];
    option::of(prop_oneof![
        Just(Seccomp {
            mode: SeccompMode::Off,
            mount: SeccompMount::Auto,
            deny: Vec::new(),
        }),
        (
            select(SeccompMount::ALL.to_vec()),
            subsequence(names.to_vec(), 0..=names.len()).prop_shuffle(),
        )
            .prop_map(|(mount, deny)| Seccomp {
                mode: SeccompMode::Default,
                mount,
                deny: deny.into_iter().map(String::from).collect(),
            }),
    ])
}

/// `<idmap>` or `<lxvirt:userns>` (they exclude each other), or neither.
fn arb_ids() -> impl Strategy<Value = (Option<IdMap>, Option<Userns>)> {
    prop_oneof![
        Just((None, None)),
        (arb_idmap_list(), arb_idmap_list())
            .prop_map(|(uid, gid)| (Some(IdMap { uid, gid }), None)),
        Just((
            None,
            Some(Userns {
                mode: UsernsMode::Host,
                allocated: None
            })
        )),
        // (The live-only block is tested on its own.)
        Just((
            None,
            Some(Userns {
                mode: UsernsMode::Auto,
                allocated: None
            })
        )),
    ]
}

#[allow(clippy::type_complexity)]
fn arb_lxc_tuning() -> impl Strategy<
    Value = (
        Option<MemTune>,
        Option<CpuTune>,
        Option<NumaTune>,
        Option<BlkioTune>,
        Option<PathBuf>,
    ),
> {
    let memtune = option::of(
        (
            option::of(arb_size(1 << 30)),
            option::of(arb_size(1 << 30)),
            option::of(arb_size(1 << 30)),
            option::of(arb_size(1 << 30)),
        )
            .prop_map(|(hard_limit, soft_limit, swap, min_guarantee)| MemTune {
                hard_limit,
                soft_limit,
                // swap_hard_limit must not be below hard_limit.
                swap_hard_limit: match (hard_limit, swap) {
                    (Some(h), Some(s)) => Some(h.max(s)),
                    (_, s) => s,
                },
                min_guarantee,
            }),
    );
    let cputune = option::of(
        (
            option::of(2u64..=262_144),
            option::of(1000u64..=1_000_000),
            option::of(prop_oneof![Just(-1i64), 1000i64..=MAX_QUOTA]),
        )
            .prop_map(|(shares, period, quota)| CpuTune {
                shares,
                period,
                quota,
            }),
    );
    let numatune = option::of((select(NumaMode::ALL.to_vec()), arb_cpuset()).prop_map(
        |(mode, nodeset)| NumaTune {
            memory: Some(NumaMemory { mode, nodeset }),
            memnodes: Vec::new(),
        },
    ));
    let blkio = option::of(
        (
            option::of(100u32..=1000),
            btree_map(
                arb_path(),
                (
                    option::of(100u32..=1000),
                    option::of(any::<u64>()),
                    option::of(any::<u64>()),
                    option::of(any::<u64>()),
                    option::of(any::<u64>()),
                ),
                0..3,
            ),
        )
            .prop_map(|(weight, devs): (_, BTreeMap<PathBuf, _>)| BlkioTune {
                weight,
                devices: devs
                    .into_iter()
                    .map(|(path, (weight, rb, wb, ri, wi))| BlkioDevice {
                        path,
                        weight,
                        read_bytes_sec: rb,
                        write_bytes_sec: wb,
                        read_iops_sec: ri,
                        write_iops_sec: wi,
                    })
                    .collect(),
            }),
    );
    (memtune, cputune, numatune, blkio, option::of(arb_path()))
}

fn arb_lxc_def() -> impl Strategy<Value = DomainDef> {
    (
        arb_common(),
        arb_lxc_tuning(),
        arb_exe_os(),
        arb_ids(),
        arb_features_lxc(),
        arb_clock(vec![TimerName::Rtc, TimerName::Hpet]),
        arb_lifecycle(false),
        arb_lxc_devices(),
        arb_seclabel(),
        arb_lxc_namespace(),
        (
            arb_seccomp(),
            option::of(1u64..=1_000_000),
            option::of(select(ApiAccess::ALL.to_vec())),
        ),
    )
        .prop_map(
            |(
                (name, uuid, title, description, metadata, (memory, current_memory), vcpu),
                (memtune, cputune, numatune, blkiotune, partition),
                os,
                (idmap, userns),
                features,
                clock,
                (on_poweroff, on_reboot, on_crash),
                devices,
                seclabel,
                lxc_namespace,
                (seccomp, pids_max, api_access),
            )| DomainDef {
                domain_type: DomainType::Lxc,
                name,
                uuid,
                title,
                description,
                metadata,
                memory,
                current_memory,
                dump_core: None,
                memtune,
                vcpu,
                cputune,
                numatune,
                blkiotune,
                partition,
                os,
                idmap,
                features,
                clock,
                on_poweroff,
                on_reboot,
                on_crash,
                devices: std::sync::Arc::new(devices),
                seclabel,
                lxc_namespace,
                seccomp,
                userns,
                pids_max,
                api_access,
                cpu: None,
                pm: None,
                kept: Vec::new(),
            },
        )
}

/// A backing chain of up to three images, ended or not by an empty one.
fn arb_backing_store() -> impl Strategy<Value = BackingStore> {
    let leaf = prop_oneof![
        Just(BackingStore::default()),
        (
            any::<bool>(),
            option::of(arb_path()),
            option::of(select(ImageFormat::ALL.to_vec()))
        )
            .prop_map(|(file, p, format)| BackingStore {
                source: Some(if file {
                    DiskSource::File(p)
                } else {
                    DiskSource::Block(p)
                }),
                format,
                backing: None,
            }),
    ];
    leaf.prop_recursive(2, 3, 1, |inner| {
        (
            any::<bool>(),
            option::of(arb_path()),
            option::of(select(ImageFormat::ALL.to_vec())),
            inner,
        )
            .prop_map(|(file, p, format, below)| BackingStore {
                source: Some(if file {
                    DiskSource::File(p)
                } else {
                    DiskSource::Block(p)
                }),
                format,
                backing: Some(Box::new(below)),
            })
    })
}

/// A kept element written out by hand.
fn kept_element(
    name: &str,
    attributes: &[(&str, &str)],
    text: Option<&str>,
    children: Vec<KeptElement>,
) -> KeptElement {
    KeptElement {
        name: name.to_owned(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        text: text.map(str::to_owned),
        children,
    }
}

/// Kept children of `<domain>`, attributes in the table's order.
fn kept_samples() -> Vec<KeptElement> {
    vec![
        kept_element(
            "memoryBacking",
            &[],
            None,
            vec![kept_element(
                "hugepages",
                &[],
                None,
                vec![kept_element(
                    "page",
                    &[("size", "2048"), ("unit", "KiB")],
                    None,
                    Vec::new(),
                )],
            )],
        ),
        kept_element("iothreads", &[], Some("2"), Vec::new()),
        kept_element(
            "sysinfo",
            &[("type", "smbios")],
            None,
            vec![kept_element(
                "system",
                &[],
                None,
                vec![kept_element(
                    "entry",
                    &[("name", "serial")],
                    Some("a & <b>"),
                    Vec::new(),
                )],
            )],
        ),
    ]
}

/// Kept devices.
fn kept_device_samples() -> Vec<KeptElement> {
    vec![
        kept_element(
            "tpm",
            &[("model", "tpm-crb")],
            None,
            vec![kept_element(
                "backend",
                &[("type", "emulator"), ("version", "2.0")],
                None,
                Vec::new(),
            )],
        ),
        kept_element(
            "hostdev",
            &[("mode", "subsystem"), ("type", "pci"), ("managed", "yes")],
            None,
            vec![
                kept_element(
                    "source",
                    &[],
                    None,
                    vec![kept_element(
                        "address",
                        &[
                            ("domain", "0x0000"),
                            ("bus", "0x06"),
                            ("slot", "0x00"),
                            ("function", "0x0"),
                        ],
                        None,
                        Vec::new(),
                    )],
                ),
                kept_element("alias", &[("name", "ua-gpu")], None, Vec::new()),
            ],
        ),
    ]
}

/// A PCI or drive address.
fn arb_address() -> impl Strategy<Value = DeviceAddress> {
    prop_oneof![
        (
            0u64..=0xffff,
            0u64..=0xff,
            0u64..=0x1f,
            0u64..=7,
            option::of(any::<bool>())
        )
            .prop_map(
                |(domain, bus, slot, function, multifunction)| DeviceAddress {
                    address_type: Some(AddressType::Pci),
                    domain: Some(domain),
                    bus: Some(bus),
                    slot: Some(slot),
                    function: Some(function),
                    multifunction,
                    ..DeviceAddress::default()
                }
            ),
        (0u64..4, 0u64..4, 0u64..4, 0u64..4).prop_map(|(controller, bus, target, unit)| {
            DeviceAddress {
                address_type: Some(AddressType::Drive),
                controller: Some(controller),
                bus: Some(bus),
                target: Some(target),
                unit: Some(unit),
                ..DeviceAddress::default()
            }
        }),
    ]
}

fn arb_vm_devices() -> impl Strategy<Value = Devices> {
    let disk = (
        any::<bool>(),
        select(DiskDevice::ALL.to_vec()),
        option::of(arb_path()),
        option::of(
            (
                option::of(Just(DiskDriverName::Qemu)),
                option::of(select(ImageFormat::ALL.to_vec())),
                option::of(select(DiskCache::ALL.to_vec())),
                option::of(select(DiskIo::ALL.to_vec())),
                option::of(select(DiskDiscard::ALL.to_vec())),
                option::of(1u32..=1024),
            )
                .prop_map(|(name, format, cache, io, discard, queues)| DiskDriver {
                    name,
                    format,
                    cache,
                    io,
                    discard,
                    queues,
                    ..DiskDriver::default()
                }),
        ),
        "[sv]d[a-z]",
        option::of(select(DiskBus::ALL.to_vec())),
        any::<bool>(),
        (
            option::of("[A-Za-z0-9-]{1,12}"),
            any::<bool>(),
            any::<bool>(),
            option::of(arb_address()),
            option::of("[a-z][a-z0-9-]{0,8}"),
            option::of(arb_backing_store()),
        ),
    )
        .prop_map(
            |(
                file,
                device,
                path,
                driver,
                target_dev,
                target_bus,
                readonly,
                (serial, shareable, transient, address, alias, backing_store),
            )| {
                let path = match (device, path) {
                    (DiskDevice::Disk | DiskDevice::Lun, None) => {
                        Some(PathBuf::from("/var/lib/img"))
                    }
                    (_, p) => p,
                };
                Disk {
                    source: if file {
                        DiskSource::File(path)
                    } else {
                        DiskSource::Block(path)
                    },
                    device,
                    model: None,
                    driver,
                    target_dev,
                    target_bus,
                    target_kept: Vec::new(),
                    readonly,
                    boot_order: None,
                    serial,
                    shareable,
                    transient,
                    address,
                    alias,
                    backing_store,
                    kept: Vec::new(),
                }
            },
        );
    (
        option::of(arb_path()),
        vec(disk, 0..3),
        vec(arb_interface(false), 0..2),
        arb_ports(),
        arb_ports(),
        vec(
            select(vec![ConsoleTargetType::Serial, ConsoleTargetType::Virtio]),
            16,
        ),
        vec(
            (
                option::of(select(SerialTargetType::ALL.to_vec())),
                option::of(select(SerialModel::ALL.to_vec())),
            ),
            16,
        ),
        (
            option::of(
                (
                    select(MemballoonModel::ALL.to_vec()),
                    option::of(any::<bool>()),
                    option::of(0u32..=3600),
                    option::of(arb_address()),
                )
                    .prop_map(|(model, autodeflate, stats_period, address)| {
                        Memballoon {
                            model,
                            autodeflate,
                            free_page_reporting: None,
                            stats_period,
                            address,
                            alias: None,
                            kept: Vec::new(),
                        }
                    }),
            ),
            vec(
                (
                    select(WatchdogModel::ALL.to_vec()),
                    option::of(select(WatchdogAction::ALL.to_vec())),
                )
                    .prop_map(|(model, action)| Watchdog {
                        model,
                        action,
                        address: None,
                        alias: None,
                    }),
                0..2,
            ),
            vec(
                (
                    select(InputType::ALL.to_vec()),
                    option::of(select(InputBus::ALL.to_vec())),
                )
                    .prop_map(|(input_type, bus)| Input {
                        input_type,
                        bus,
                        address: None,
                        alias: None,
                        kept: Vec::new(),
                    }),
                0..3,
            ),
        ),
    )
        .prop_map(
            |(
                emulator,
                disks,
                interfaces,
                serials,
                consoles,
                types,
                serial_targets,
                (memballoon, watchdogs, inputs),
            )| Devices {
                emulator,
                filesystems: Vec::new(),
                disks: unique_disks(disks),
                interfaces: unique_interfaces(interfaces),
                hostdevs: Vec::new(),
                serials: serials
                    .into_iter()
                    .zip(serial_targets)
                    .map(|(port, (target_type, model))| Serial {
                        chardev_type: ChardevType::Pty,
                        kept: Vec::new(),
                        port,
                        target_type,
                        model,
                        address: None,
                        alias: None,
                    })
                    .collect(),
                consoles: consoles
                    .into_iter()
                    .zip(types)
                    .map(|(port, target_type)| Console {
                        chardev_type: ChardevType::Pty,
                        kept: Vec::new(),
                        target_type,
                        port,
                        address: None,
                        alias: None,
                    })
                    .collect(),
                memballoon,
                watchdogs,
                inputs,
                ..Devices::default()
            },
        )
}

fn arb_vm_def() -> impl Strategy<Value = DomainDef> {
    let os = (
        option::of(select(vec!["x86_64".to_owned(), "aarch64".to_owned()])),
        option::of(select(vec!["q35".to_owned(), "pc-i440fx-9.0".to_owned()])),
        option::of(arb_path()),
        option::of(arb_path()),
        option::of(arb_text()),
        subsequence(BootDev::ALL.to_vec(), 0..=BootDev::ALL.len()).prop_shuffle(),
        option::of(select(Firmware::ALL.to_vec())),
        (
            option::of(
                (
                    option::of(arb_path()),
                    option::of(any::<bool>()),
                    option::of(select(LoaderType::ALL.to_vec())),
                    option::of(any::<bool>()),
                    option::of(any::<bool>()),
                )
                    .prop_map(
                        |(path, readonly, loader_type, secure, stateless)| Loader {
                            path,
                            readonly,
                            loader_type,
                            secure,
                            stateless,
                        },
                    ),
            ),
            option::of(
                (option::of(arb_path()), option::of(arb_path()))
                    .prop_map(|(path, template)| Nvram { path, template }),
            ),
            option::of(
                (option::of(any::<bool>()), option::of(0u32..=65535))
                    .prop_map(|(enable, timeout)| BootMenu { enable, timeout }),
            ),
            option::of(select(SmbiosMode::ALL.to_vec())),
        ),
    )
        .prop_map(
            |(
                arch,
                machine,
                kernel,
                initrd,
                cmdline,
                boot,
                firmware,
                (loader, nvram, bootmenu, smbios),
            )| {
                Os::Hvm(HvmOs {
                    firmware,
                    loader,
                    nvram,
                    bootmenu,
                    smbios,
                    kept: Vec::new(),
                    arch,
                    machine,
                    kernel,
                    initrd,
                    cmdline,
                    boot,
                })
            },
        );
    let cpu = (
        option::of(select(CpuMode::ALL.to_vec())),
        option::of(select(CpuMatch::ALL.to_vec())),
        option::of(select(CpuCheck::ALL.to_vec())),
        option::of(any::<bool>()),
        option::of(
            (
                option::of("[A-Z][a-z0-9-]{0,12}"),
                option::of(select(CpuFallback::ALL.to_vec())),
            )
                .prop_map(|(name, fallback)| CpuModel { name, fallback }),
        ),
        option::of(
            (
                option::of(1u32..=4096),
                option::of(1u32..=4096),
                option::of(1u32..=4096),
                option::of(1u32..=4096),
                option::of(1u32..=4096),
            )
                .prop_map(|(sockets, dies, clusters, cores, threads)| CpuTopology {
                    sockets,
                    dies,
                    clusters,
                    cores,
                    threads,
                }),
        ),
        btree_map(
            "[a-z][a-z0-9_.-]{0,10}",
            option::of(select(CpuFeaturePolicy::ALL.to_vec())),
            0..3,
        ),
    )
        .prop_map(
            |(mode, match_mode, check, migratable, model, topology, features)| Cpu {
                mode,
                match_mode,
                check,
                migratable,
                model,
                topology,
                features: features
                    .into_iter()
                    .map(|(name, policy)| CpuFeature { policy, name })
                    .collect(),
                kept: Vec::new(),
            },
        );
    let pm = (option::of(any::<bool>()), option::of(any::<bool>())).prop_map(
        |(suspend_to_mem, suspend_to_disk)| Pm {
            suspend_to_mem,
            suspend_to_disk,
        },
    );
    let vm_features = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(select(IoapicDriver::ALL.to_vec())),
        // <apic eoi>, <smm><tseg> (MiB), <memory dumpCore>.
        (
            option::of(any::<bool>()),
            option::of(1u64..=256),
            option::of(any::<bool>()),
        ),
    );
    let catchup = (
        option::of(0u64..=100_000),
        option::of(0u64..=100_000),
        option::of(0u64..=100_000),
    )
        .prop_map(|(threshold, slew, limit)| TimerCatchup {
            threshold,
            slew,
            limit,
        });
    let timer_extras = vec((option::of(1u64..=10_000_000_000), option::of(catchup)), 8);
    (
        arb_common(),
        select(vec![DomainType::Kvm, DomainType::Qemu]),
        os,
        (any::<bool>(), any::<bool>(), any::<bool>()),
        arb_clock(TimerName::ALL.to_vec()),
        arb_lifecycle(true),
        arb_vm_devices(),
        arb_seclabel(),
        (
            option::of(1u32..=64),
            (
                vec(option::of(select(TickPolicy::ALL.to_vec())), 8),
                timer_extras,
            ),
            option::of(cpu),
            option::of(pm),
            vm_features,
            (
                subsequence(kept_samples(), 0..=3),
                subsequence(kept_device_samples(), 0..=2),
            ),
        ),
    )
        .prop_map(
            |(
                (name, uuid, title, description, metadata, (memory, current_memory), mut vcpu),
                domain_type,
                os,
                (acpi, apic, pae),
                mut clock,
                (on_poweroff, on_reboot, on_crash),
                mut devices,
                seclabel,
                (
                    current,
                    (tickpolicies, timer_extras),
                    cpu,
                    pm,
                    (vmport, smm, ioapic, (apic_eoi, tseg, dump_core)),
                    (kept, kept_devices),
                ),
            )| {
                devices.kept = kept_devices;
                vcpu.current = current.map(|c| c.min(vcpu.count));
                for ((t, p), (frequency, catchup)) in
                    clock.timers.iter_mut().zip(tickpolicies).zip(timer_extras)
                {
                    t.tickpolicy = p;
                    t.frequency = frequency;
                    t.catchup = catchup;
                }
                DomainDef {
                    domain_type,
                    name,
                    uuid,
                    title,
                    description,
                    metadata,
                    memory,
                    current_memory,
                    dump_core,
                    memtune: None,
                    vcpu,
                    cputune: None,
                    numatune: None,
                    blkiotune: None,
                    partition: None,
                    os,
                    idmap: None,
                    features: Features {
                        acpi,
                        apic,
                        pae,
                        vmport,
                        smm,
                        ioapic,
                        // Both live inside their element.
                        apic_eoi: apic_eoi.filter(|_| apic),
                        smm_tseg_mib: tseg.filter(|_| smm.is_some()),
                        ..Features::default()
                    },
                    clock,
                    on_poweroff,
                    on_reboot,
                    on_crash,
                    devices: std::sync::Arc::new(devices),
                    seclabel,
                    lxc_namespace: None,
                    seccomp: None,
                    userns: None,
                    pids_max: None,
                    api_access: None,
                    cpu,
                    pm,
                    kept,
                }
            },
        )
}

// ---------------------------------------------------------------------------
// Networks
// ---------------------------------------------------------------------------

/// Host names (DNS labels, possibly dotted).
fn arb_dns_name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,6}[a-z0-9])?){0,2}"
}

fn arb_forward() -> impl Strategy<Value = Option<Forward>> {
    let nat = (
        option::of((any::<u32>(), any::<u32>()).prop_map(|(x, y)| Ipv4Range {
            start: Ipv4Addr::from(x.min(y)),
            end: Ipv4Addr::from(x.max(y)),
        })),
        option::of((1..=u16::MAX, 1..=u16::MAX).prop_map(|(x, y)| PortRange {
            start: x.min(y),
            end: x.max(y),
        })),
    )
        .prop_map(|(addresses, ports)| Nat { addresses, ports });
    option::of(
        (
            select(ForwardMode::ALL.to_vec()),
            option::of(arb_ifname()),
            nat,
        )
            .prop_map(|(mode, dev, nat)| Forward {
                mode,
                dev: dev.filter(|_| mode != ForwardMode::Open),
                nat: if mode == ForwardMode::Nat {
                    nat
                } else {
                    Nat::default()
                },
            }),
    )
}

fn arb_dns() -> impl Strategy<Value = Dns> {
    let forwarder = (
        option::of(arb_ip_pair().prop_map(|(ip, _, _)| ip)),
        option::of(arb_dns_name()),
    )
        .prop_map(|(addr, domain)| match (addr, domain) {
            (None, None) => DnsForwarder {
                addr: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53))),
                domain: None,
            },
            (addr, domain) => DnsForwarder { addr, domain },
        });
    let host = btree_set(arb_dns_name(), 1..3)
        .prop_flat_map(|names| Just(names.into_iter().collect::<Vec<_>>()).prop_shuffle());
    prop_oneof![
        1 => Just(Dns {
            enable: false,
            forwarders: Vec::new(),
            hosts: Vec::new(),
        }),
        4 => (
            vec(forwarder, 0..3),
            btree_map(arb_ip_pair().prop_map(|(ip, _, _)| ip), host, 0..3),
        )
            .prop_map(|(forwarders, hosts)| {
                let mut unique: Vec<DnsForwarder> = Vec::new();
                for f in forwarders {
                    if !unique.contains(&f) {
                        unique.push(f);
                    }
                }
                Dns {
                    enable: true,
                    forwarders: unique,
                    hosts: hosts
                        .into_iter()
                        .map(|(ip, hostnames)| DnsHost { ip, hostnames })
                        .collect(),
                }
            }),
    ]
}

/// The address `offset` after the start of `subnet`.
fn nth_address(subnet: addr::Subnet, offset: u128) -> IpAddr {
    match subnet.network() {
        IpAddr::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n) + offset as u32)),
        IpAddr::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n) + offset)),
    }
}

/// A DHCP service for `subnet`, whose usable host offsets are
/// `1..=last`: up to two disjoint ranges and a few hosts, none on the
/// bridge's address.
fn arb_dhcp(subnet: addr::Subnet, last: u128) -> impl Strategy<Value = Option<Dhcp>> {
    let bridge = addr::ordinal(subnet.address) - addr::ordinal(subnet.network());
    let v4 = subnet.address.is_ipv4();
    let offset = move || (1..=last).prop_filter("not the bridge", move |o| *o != bridge);
    (
        btree_set(offset(), 0..=4),
        btree_map(
            offset(),
            (option::of(arb_mac()), option::of("[a-z][a-z0-9]{0,6}")),
            0..4,
        ),
    )
        .prop_map(move |(cuts, hosts)| {
            let cuts: Vec<u128> = cuts.into_iter().collect();
            let ranges = cuts
                .chunks_exact(2)
                .filter(|p| !(p[0]..=p[1]).contains(&bridge))
                .map(|p| DhcpRange {
                    start: nth_address(subnet, p[0]),
                    end: nth_address(subnet, p[1]),
                })
                .collect();
            let mut macs = BTreeSet::new();
            let mut names = BTreeSet::new();
            let hosts = hosts
                .into_iter()
                .enumerate()
                .map(|(i, (offset, (mac, name)))| {
                    let mac = mac.filter(|m| v4 && macs.insert(*m));
                    let name = name
                        .filter(|n| names.insert(n.clone()))
                        .or_else(|| (!v4 || mac.is_none()).then(|| format!("host{i}")));
                    DhcpHost {
                        mac,
                        name,
                        ip: nth_address(subnet, offset),
                    }
                })
                .collect();
            let dhcp = Dhcp { ranges, hosts };
            (dhcp != Dhcp::default()).then_some(dhcp)
        })
}

/// `<ip>`s in distinct blocks (so their subnets never overlap): IPv4 in
/// distinct 10.x.y.0/24 blocks, IPv6 in distinct fd00:N::/64 blocks; DHCP
/// on at most the first of each family.
fn arb_network_ips() -> impl Strategy<Value = Vec<NetworkIp>> {
    let v4 = btree_set(0u32..65536, 0..3).prop_flat_map(|blocks| {
        let strategies: Vec<_> = blocks
            .into_iter()
            .map(|block| {
                (24u8..=30).prop_flat_map(move |prefix| {
                    let last = (1u128 << (32 - prefix)) - 2;
                    (Just(prefix), 1..=last).prop_map(move |(prefix, host)| {
                        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) | (block << 8);
                        addr::Subnet {
                            address: IpAddr::V4(Ipv4Addr::from(base + host as u32)),
                            prefix,
                        }
                    })
                })
            })
            .collect();
        strategies
    });
    let v6 = btree_set(0u16..=u16::MAX, 0..3).prop_flat_map(|blocks| {
        let strategies: Vec<_> = blocks
            .into_iter()
            .map(|block| {
                (64u8..=120, 1u16..=200).prop_map(move |(prefix, host)| addr::Subnet {
                    address: IpAddr::V6(Ipv6Addr::new(0xfd00, block, 0, 0, 0, 0, 0, host)),
                    prefix,
                })
            })
            .collect();
        strategies
    });
    (v4, v6)
        .prop_flat_map(|(v4, v6)| {
            let with_dhcp = |subnets: Vec<addr::Subnet>| {
                subnets
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let last = if s.address.is_ipv4() {
                            (1u128 << (32 - s.prefix)) - 2
                        } else {
                            (1u128 << (128 - s.prefix).min(12)) - 1
                        };
                        let dhcp = if i == 0 {
                            option::of(arb_dhcp(s, last))
                                .prop_map(Option::flatten)
                                .boxed()
                        } else {
                            Just(None).boxed()
                        };
                        dhcp.prop_map(move |dhcp| NetworkIp {
                            address: s.address,
                            prefix: s.prefix,
                            dhcp,
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let mut all = with_dhcp(v4);
            all.extend(with_dhcp(v6));
            all
        })
        .prop_shuffle()
}

/// Any valid network definition.
pub fn arb_network_def() -> impl Strategy<Value = NetworkDef> {
    (
        "[A-Za-z0-9_+][A-Za-z0-9_.+-]{0,20}".prop_map(|s| NetworkName::new(&s).unwrap()),
        arb_uuid(),
        arb_forward(),
        (
            option::of(arb_ifname()),
            any::<bool>(),
            0..=MAX_BRIDGE_DELAY,
        )
            .prop_map(|(name, stp, delay)| Bridge { name, stp, delay }),
        option::of(arb_mac()),
        option::of(MIN_MTU..=u16::MAX),
        option::of(
            (arb_dns_name(), any::<bool>())
                .prop_map(|(name, local_only)| NetworkDomain { name, local_only }),
        ),
        arb_dns(),
        arb_network_ips(),
    )
        .prop_map(
            |(name, uuid, forward, bridge, mac, mtu, domain, dns, ips)| NetworkDef {
                name,
                uuid,
                forward,
                bridge,
                mac,
                mtu,
                domain,
                dns,
                ips,
            },
        )
        .boxed()
}
