//! rtnetlink messages and a small synchronous client.
//!
//! The builders are pure functions (unit-tested on their bytes); the
//! [`Netlink`] client sends one request at a time on a `NETLINK_ROUTE`
//! socket and waits for its acknowledgement, with the kernel's extended
//! error message when it has one. A socket belongs to the network
//! namespace it was created in, so [`Netlink::open_in`] gives a client
//! that configures another namespace without the caller staying in it.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use netlink_packet_core::Emitable;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NlasIterator, Parseable,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecBridge, AfSpecInet6, AfSpecUnspec, BridgeStpState, BridgeVlanInfo, BridgeVlanInfoFlags,
    In6AddrGenMode, InfoBridge, InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkHeader, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::TcMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::tc::{delete_ingress, delete_root, new_ingress, new_redirect_filter, new_tbf};
use super::{
    BridgeLink, BridgeSettings, BridgeVlan, FoundLink, HostLinks, HostRoute, Ifb, IpAddress,
    IpRoute, LinkChange, Links, Macvlan, MacvlanMode as Mode, Netns, RateLimit, Veth, VethIndexes,
};
use crate::sys::Errno;
use crate::sys::linux;

/// A request the kernel refused (or one that could not be sent or read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match message { Some(m) => m.as_str(), None => errno.desc() })]
pub struct LinkError {
    pub errno: Errno,
    /// The kernel's extended acknowledgement message, when it sent one
    /// ("Master is not a bridge"…).
    pub message: Option<String>,
}

impl LinkError {
    fn errno(errno: Errno) -> LinkError {
        LinkError {
            errno,
            message: None,
        }
    }

    pub(super) fn io(error: std::io::Error) -> LinkError {
        LinkError::errno(linux::io_errno(error))
    }
}

/// Bytes read per `recv`: a link's description is a few KiB.
const RECV_BUFFER: usize = 32 * 1024;

/// `IFLA_IFNAME`, `IFLA_IFALIAS`, `IFLA_LINKINFO` with its
/// `IFLA_INFO_KIND` and `IFLA_INFO_DATA`, and a bridge's data, read from
/// replies.
const IFLA_IFNAME: u16 = 3;
/// The link a device is bound to: a veth's peer, by its index in the
/// peer's namespace.
const IFLA_LINK: u16 = 5;
const IFLA_IFALIAS: u16 = 20;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BR_VLAN_DEFAULT_PVID: u16 = 39;
/// `NLMSGERR_ATTR_MSG` of an extended acknowledgement.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Flag of an acknowledgement that carries TLVs.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HEADER_LEN: usize = 16;
/// rtnetlink message types.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// Clock ticks of the bridge's timers (`USER_HZ`).
const BRIDGE_TICKS_PER_SECOND: u32 = 100;

/// One rtnetlink request: its message type and message. (Not
/// `RouteNetlinkMessage`, whose serializer brings every rtnetlink family
/// into the monitor's binary.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Link(u16, LinkMessage),
    Address(u16, AddressMessage),
    Route(u16, RouteMessage),
    Tc(u16, TcMessage),
}

/// A synchronous rtnetlink client in one network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    sequence: Cell<u32>,
    buffer: RefCell<Vec<u8>>,
}

impl Netlink {
    /// A client in the caller's network namespace.
    pub fn open() -> Result<Netlink, LinkError> {
        let socket = open_socket(NETLINK_ROUTE)?;
        Ok(Netlink {
            socket,
            sequence: Cell::new(0),
            buffer: RefCell::new(Vec::with_capacity(RECV_BUFFER)),
        })
    }

    /// A client in the network namespace `netns`: the calling thread joins
    /// it, opens the socket and returns to its own namespace.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Netlink, LinkError> {
        let own = linux::open_namespace(Path::new("/proc/thread-self/ns/net"))
            .map_err(LinkError::errno)?;
        linux::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(LinkError::errno)?;
        let opened = Netlink::open();
        linux::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET).map_err(LinkError::errno)?;
        opened
    }

    /// The socket, which keeps its network namespace alive.
    pub fn socket_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Sends `message` and waits for its acknowledgement; returns the
    /// replies that came before it: (message type, payload).
    fn request(&self, message: Request, flags: u16) -> Result<Vec<(u16, Vec<u8>)>, LinkError> {
        let sequence = self.sequence.get().wrapping_add(1);
        self.sequence.set(sequence);
        let bytes = serialize(message, flags, sequence);
        self.socket.send(&bytes, 0).map_err(LinkError::io)?;
        let mut replies = Vec::new();
        let mut buffer = self.buffer.borrow_mut();
        loop {
            buffer.clear();
            buffer.reserve(RECV_BUFFER);
            let read = loop {
                match self.socket.recv(&mut *buffer, 0) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let read = read.map_err(LinkError::io)?;
            let mut offset = 0;
            while offset < read.min(buffer.len()) {
                let message = NetlinkBuffer::new_checked(&buffer[offset..])
                    .map_err(|_| bad_reply("a truncated message"))?;
                let length = message.length() as usize;
                if length < NLMSG_HEADER_LEN {
                    return Err(bad_reply("a message shorter than its header"));
                }
                offset += length.next_multiple_of(4);
                if message.sequence_number() != sequence {
                    continue;
                }
                match message.message_type() {
                    NLMSG_ERROR => {
                        return match ack_result(message.flags(), message.payload()) {
                            Ok(()) => Ok(replies),
                            Err(e) => Err(e),
                        };
                    }
                    NLMSG_DONE => return Ok(replies),
                    kind => replies.push((kind, message.payload().to_vec())),
                }
            }
        }
    }
}

/// A netlink socket of `protocol`, bound and talking to the kernel, with
/// extended acknowledgements asked for.
pub(super) fn open_socket(protocol: isize) -> Result<Socket, LinkError> {
    let mut socket = Socket::new(protocol).map_err(LinkError::io)?;
    socket.bind_auto().map_err(LinkError::io)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(LinkError::io)?;
    // Both are optional: without them errors carry no message.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    Ok(socket)
}

fn bad_reply(what: &str) -> LinkError {
    LinkError {
        errno: Errno::EBADMSG,
        message: Some(format!("the kernel's netlink reply has {what}")),
    }
}

/// The message with its netlink header, ready to send.
pub fn serialize(message: Request, flags: u16, sequence: u32) -> Vec<u8> {
    let (kind, payload): (u16, &dyn Emitable) = match &message {
        Request::Link(kind, m) => (*kind, m),
        Request::Address(kind, m) => (*kind, m),
        Request::Route(kind, m) => (*kind, m),
        Request::Tc(kind, m) => (*kind, m),
    };
    let length = NLMSG_HEADER_LEN + payload.buffer_len();
    let mut bytes = vec![0u8; length];
    payload.emit(&mut bytes[NLMSG_HEADER_LEN..]);
    let mut header = NetlinkBuffer::new(&mut bytes[..]);
    header.set_length(length as u32);
    header.set_message_type(kind);
    header.set_flags(NLM_F_REQUEST | NLM_F_ACK | flags);
    header.set_sequence_number(sequence);
    bytes
}

/// The outcome an `NLMSG_ERROR` payload carries: 0 is an acknowledgement,
/// a negative errno a refusal, with the extended message if any.
pub(super) fn ack_result(flags: u16, payload: &[u8]) -> Result<(), LinkError> {
    let Some(code) = payload.get(..4) else {
        return Err(bad_reply("an error message without a code"));
    };
    let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    if code == 0 {
        return Ok(());
    }
    let rest = &payload[4..];
    // The request comes back whole unless capped to its header.
    let skip = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HEADER_LEN
    } else {
        rest.get(..4)
            .map(|l| u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .unwrap_or(0)
            .next_multiple_of(4)
    };
    let message = if flags & NLM_F_ACK_TLVS != 0 {
        rest.get(skip..).and_then(extended_message)
    } else {
        None
    };
    Err(LinkError {
        errno: Errno::from_raw(-code),
        message,
    })
}

fn extended_message(tlvs: &[u8]) -> Option<String> {
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| text(nla.value()))
}

/// The text of a string attribute (NUL-terminated or not).
fn text(value: &[u8]) -> String {
    let text = value.split(|&b| b == 0).next().unwrap_or(value);
    String::from_utf8_lossy(text).into_owned()
}

/// The name, index, kind and alias of a link from an `RTM_NEWLINK`
/// reply, and a bridge's VLAN settings.
fn found_link(payload: &[u8]) -> Result<(String, FoundLink), LinkError> {
    let header = LinkHeader::parse(payload).map_err(|_| bad_reply("a short link header"))?;
    let attribute = |nlas: &[u8], kind: u16| {
        NlasIterator::new(nlas)
            .filter_map(Result::ok)
            .find(|nla| nla.kind() & 0x3fff == kind)
            .map(|nla| nla.value().to_vec())
    };
    let attributes = payload.get(16..).unwrap_or_default();
    let name = attribute(attributes, IFLA_IFNAME)
        .map(|v| text(&v))
        .unwrap_or_default();
    let info = attribute(attributes, IFLA_LINKINFO);
    let kind = info
        .as_ref()
        .and_then(|info| attribute(info, IFLA_INFO_KIND))
        .map(|v| text(&v));
    let bridge = match (kind.as_deref(), &info) {
        (Some("bridge"), Some(info)) => {
            let data = attribute(info, IFLA_INFO_DATA).unwrap_or_default();
            Some(BridgeSettings {
                vlan_filtering: attribute(&data, IFLA_BR_VLAN_FILTERING)
                    .is_some_and(|v| v.first().is_some_and(|&on| on != 0)),
                default_pvid: attribute(&data, IFLA_BR_VLAN_DEFAULT_PVID)
                    .and_then(|v| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)))
                    .unwrap_or(0),
            })
        }
        _ => None,
    };
    Ok((
        name,
        FoundLink {
            index: header.index,
            kind,
            alias: attribute(attributes, IFLA_IFALIAS).map(|v| text(&v)),
            bridge,
        },
    ))
}

/// `IFLA_LINK` of an `RTM_NEWLINK` message: a veth end's peer.
fn peer_index(payload: &[u8]) -> Option<u32> {
    NlasIterator::new(payload.get(16..)?)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() & 0x3fff == IFLA_LINK)
        .and_then(|nla| Some(u32::from_ne_bytes(nla.value().get(..4)?.try_into().ok()?)))
        .filter(|&index| index != 0)
}

fn netns_attribute(netns: Netns<'_>) -> LinkAttribute {
    match netns {
        Netns::Fd(fd) => LinkAttribute::NetNsFd(fd.as_raw_fd()),
        Netns::Pid(pid) => LinkAttribute::NetNsPid(pid),
    }
}

fn up_header(header: &mut LinkHeader, up: bool) {
    header.change_mask |= LinkFlags::Up;
    if up {
        header.flags |= LinkFlags::Up;
    } else {
        header.flags.remove(LinkFlags::Up);
    }
}

/// `RTM_GETLINK` of one link by name, without its statistics.
pub fn get_link(name: &str) -> Request {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    Request::Link(RTM_GETLINK, message)
}

/// `RTM_NEWLINK` of a veth pair (`ip link add NAME [mtu N] [group G]
/// [master M] [up] type veth peer name PEER [mtu N] [address MAC] [netns
/// NS]`). The peer is created
/// in its namespace directly, under its final name.
pub fn new_veth(veth: &Veth<'_>) -> Request {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(veth.peer_name.to_owned()));
    if let Some(mtu) = veth.mtu {
        peer.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = veth.peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(netns) = veth.peer_netns {
        peer.attributes.push(netns_attribute(netns));
    }
    // One queue each way, as the kernel sets a veth anyway once made:
    // asked for as many queues as CPUs, it cuts them back to one after
    // registering each end, waiting for an expedited RCU grace period
    // each time (~0.1 ms of the pair's ~0.6 ms, and an interrupt on every
    // CPU).
    peer.attributes.push(LinkAttribute::NumTxQueues(1));
    peer.attributes.push(LinkAttribute::NumRxQueues(1));
    let mut message = LinkMessage::default();
    message.attributes.push(LinkAttribute::NumTxQueues(1));
    message.attributes.push(LinkAttribute::NumRxQueues(1));
    message
        .attributes
        .push(LinkAttribute::IfName(veth.name.to_owned()));
    if let Some(mtu) = veth.mtu {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(group) = veth.group {
        message.attributes.push(LinkAttribute::Group(group));
    }
    if let Some(master) = veth.master {
        message.attributes.push(LinkAttribute::Controller(master));
    }
    if veth.up {
        up_header(&mut message.header, true);
    }
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    Request::Link(RTM_NEWLINK, message)
}

/// `RTM_NEWLINK` of a macvlan (`ip link add link LOWER name NAME [mtu N]
/// [address MAC] [netns NS] type macvlan mode MODE`).
pub fn new_macvlan(macvlan: &Macvlan<'_>) -> Request {
    let mode = match macvlan.mode {
        Mode::Private => MacVlanMode::Private,
        Mode::Vepa => MacVlanMode::Vepa,
        Mode::Bridge => MacVlanMode::Bridge,
        Mode::Passthrough => MacVlanMode::Passthrough,
    };
    let mut message = LinkMessage::default();
    if macvlan.up {
        up_header(&mut message.header, true);
    }
    message
        .attributes
        .push(LinkAttribute::IfName(macvlan.name.to_owned()));
    message.attributes.push(LinkAttribute::Link(macvlan.lower));
    if let Some(mtu) = macvlan.mtu {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = macvlan.mac {
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(netns) = macvlan.netns {
        message.attributes.push(netns_attribute(netns));
    }
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::MacVlan),
        LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
    ]));
    Request::Link(RTM_NEWLINK, message)
}

/// `RTM_NEWLINK` of an ifb device, up (`ip link add NAME up type ifb`).
pub fn new_ifb(name: &str) -> Request {
    let mut message = LinkMessage::default();
    up_header(&mut message.header, true);
    message
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    message
        .attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
    Request::Link(RTM_NEWLINK, message)
}

/// `RTM_NEWLINK` setting a link's alias (`ip link set INDEX alias
/// ALIAS`): the kernel ignores one given at creation.
pub fn set_alias(index: u32, alias: &str) -> Request {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
        .attributes
        .push(LinkAttribute::IfAlias(alias.to_owned()));
    Request::Link(RTM_NEWLINK, message)
}

/// A bridge port's VLAN request (`AF_BRIDGE`, `IFLA_AF_SPEC` with one
/// `IFLA_BRIDGE_VLAN_INFO` per VLAN), handled by the port's bridge.
fn bridge_vlans(kind: u16, port: u32, vlans: impl Iterator<Item = BridgeVlanInfo>) -> Request {
    let mut message = LinkMessage::default();
    message.header.interface_family = AddressFamily::Bridge;
    message.header.index = port;
    message.attributes.push(LinkAttribute::AfSpecBridge(
        vlans.map(AfSpecBridge::VlanInfo).collect(),
    ));
    Request::Link(kind, message)
}

/// `RTM_SETLINK` adding VLANs to a bridge port (`bridge vlan add dev PORT
/// vid VID [pvid] [untagged]`, for each).
pub fn add_bridge_vlans(port: u32, vlans: &[BridgeVlan]) -> Request {
    let infos = vlans.iter().map(|vlan| {
        let mut flags = BridgeVlanInfoFlags::empty();
        if vlan.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if vlan.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        BridgeVlanInfo {
            flags,
            vid: vlan.vid,
        }
    });
    bridge_vlans(RTM_SETLINK, port, infos)
}

/// `RTM_DELLINK` of a port's VLAN (`bridge vlan del dev PORT vid VID`).
pub fn delete_bridge_vlan(port: u32, vid: u16) -> Request {
    let info = BridgeVlanInfo {
        flags: BridgeVlanInfoFlags::empty(),
        vid,
    };
    bridge_vlans(RTM_DELLINK, port, std::iter::once(info))
}

/// `RTM_NEWLINK` changing an existing link (`ip link set`).
pub fn change_link(index: u32, change: &LinkChange<'_>) -> Request {
    let mut message = LinkMessage::default();
    message.header.index = index;
    if let Some(netns) = change.netns {
        message.attributes.push(netns_attribute(netns));
    }
    if let Some(name) = change.name {
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
    }
    if let Some(mac) = change.mac {
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(master) = change.master {
        message.attributes.push(LinkAttribute::Controller(master));
    }
    if let Some(group) = change.group {
        message.attributes.push(LinkAttribute::Group(group));
    }
    if let Some(up) = change.up {
        up_header(&mut message.header, up);
    }
    if let Some(link_local) = change.ipv6_link_local {
        let mode = if link_local {
            In6AddrGenMode::Eui64
        } else {
            In6AddrGenMode::None
        };
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(mode)],
            )]));
    }
    Request::Link(RTM_NEWLINK, message)
}

/// `RTM_NEWLINK` of a bridge (`ip link add NAME [address MAC] [mtu M]
/// type bridge stp_state S forward_delay D`). The delay is set before STP
/// in the same request: the kernel checks a delay against the STP state
/// it has when the delay arrives.
pub fn new_bridge(bridge: &BridgeLink<'_>) -> Request {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::IfName(bridge.name.to_owned()));
    if let Some(mac) = bridge.mac {
        message
            .attributes
            .push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(mtu) = bridge.mtu {
        message.attributes.push(LinkAttribute::Mtu(mtu));
    }
    let stp = if bridge.stp {
        BridgeStpState::KernelStp
    } else {
        BridgeStpState::Disabled
    };
    message.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::ForwardDelay(bridge.forward_delay * BRIDGE_TICKS_PER_SECOND),
            InfoBridge::StpState(stp),
        ])),
    ]));
    Request::Link(RTM_NEWLINK, message)
}

/// A link of a dump: index, name, MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedLink {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

/// `RTM_GETLINK` dump of every link, without statistics.
pub fn dump_links() -> Request {
    let mut message = LinkMessage::default();
    message
        .attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    Request::Link(RTM_GETLINK, message)
}

/// `RTM_GETADDR` dump of every address.
pub fn dump_addresses() -> Request {
    Request::Address(RTM_GETADDR, AddressMessage::default())
}

fn dumped_link(payload: &[u8]) -> Option<DumpedLink> {
    let message = LinkMessage::parse(payload).ok()?;
    let mut name = String::new();
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => {}
        }
    }
    Some(DumpedLink {
        index: message.header.index,
        name,
        mac,
    })
}

/// An address of a dump: (link index, address, prefix).
fn dumped_address(payload: &[u8]) -> Option<(u32, IpAddr, u8)> {
    let message = AddressMessage::parse(payload).ok()?;
    let mut address = None;
    let mut local = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            _ => {}
        }
    }
    Some((
        message.header.index,
        local.or(address)?,
        message.header.prefix_len,
    ))
}

impl Netlink {
    /// Every link of the namespace.
    pub fn links(&self) -> Result<Vec<DumpedLink>, LinkError> {
        let replies = self.request(dump_links(), NLM_F_DUMP)?;
        Ok(replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .filter_map(|(_, payload)| dumped_link(payload))
            .collect())
    }

    /// Every address of the namespace: (link index, address, prefix).
    pub fn addresses(&self) -> Result<Vec<(u32, IpAddr, u8)>, LinkError> {
        let replies = self.request(dump_addresses(), NLM_F_DUMP)?;
        Ok(replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWADDR)
            .filter_map(|(_, payload)| dumped_address(payload))
            .collect())
    }
}

/// `RTM_GETROUTE` dump of one family's routes.
pub fn dump_routes(ipv6: bool) -> Request {
    let mut message = RouteMessage::default();
    message.header.address_family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    Request::Route(RTM_GETROUTE, message)
}

/// A unicast route of the main table from an `RTM_NEWROUTE` reply.
fn host_route(payload: &[u8]) -> Option<HostRoute> {
    let message = RouteMessage::parse(payload).ok()?;
    let header = &message.header;
    if header.table != RouteHeader::RT_TABLE_MAIN || header.kind != RouteType::Unicast {
        return None;
    }
    let mut destination = None;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => destination = Some((*a).into()),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => destination = Some((*a).into()),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let destination = destination.unwrap_or(match header.address_family {
        AddressFamily::Inet6 => IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED),
    });
    Some(HostRoute {
        destination,
        prefix: header.destination_prefix_length,
        oif,
    })
}

/// `RTM_DELLINK`.
pub fn delete_link(index: u32) -> Request {
    let mut message = LinkMessage::default();
    message.header.index = index;
    Request::Link(RTM_DELLINK, message)
}

fn family(address: IpAddr) -> AddressFamily {
    match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `RTM_NEWADDR` (`ip address add ADDRESS/PREFIX [peer PEER] dev INDEX`);
/// an IPv4 address without a peer gets its subnet's broadcast address.
pub fn new_address(index: u32, address: &IpAddress) -> Request {
    let mut message = AddressMessage::default();
    message.header.family = family(address.address);
    message.header.prefix_len = address.prefix;
    message.header.index = index;
    let remote = address.peer.unwrap_or(address.address);
    message
        .attributes
        .push(AddressAttribute::Local(address.address));
    message.attributes.push(AddressAttribute::Address(remote));
    if let (IpAddr::V4(v4), None) = (address.address, address.peer)
        && address.prefix < 31
    {
        let host_bits = u32::MAX >> address.prefix;
        let broadcast = std::net::Ipv4Addr::from(u32::from(v4) | host_bits);
        message
            .attributes
            .push(AddressAttribute::Broadcast(broadcast));
    }
    Request::Address(RTM_NEWADDR, message)
}

/// `RTM_NEWROUTE` in the main table (`ip route add DEST/PREFIX [via GW]
/// dev INDEX`): a gateway route, or a link-scope route without one.
pub fn new_route(index: u32, route: &IpRoute) -> Request {
    let mut message = RouteMessage::default();
    message.header.address_family = family(route.destination);
    message.header.destination_prefix_length = route.prefix;
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::Boot;
    message.header.kind = RouteType::Unicast;
    message.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if route.prefix > 0 {
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                route.destination,
            )));
    }
    if let Some(gateway) = route.gateway {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
    }
    message.attributes.push(RouteAttribute::Oif(index));
    Request::Route(RTM_NEWROUTE, message)
}

/// Flags of a request that creates something that must not exist yet.
const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

impl Netlink {
    /// An `RTM_DELQDISC`; none there already is fine (the kernel says
    /// ENOENT, or EINVAL for a link that never had a qdisc of its own).
    fn delete_qdisc(&self, request: Request) -> Result<(), LinkError> {
        match self.request(request, 0) {
            Err(e) if e.errno == Errno::ENOENT || e.errno == Errno::EINVAL => Ok(()),
            result => result.map(drop),
        }
    }
}

impl Links for Netlink {
    fn find(&self, name: &str) -> Result<Option<FoundLink>, LinkError> {
        match self.request(get_link(name), 0) {
            Ok(replies) => replies
                .iter()
                .find(|(kind, _)| *kind == RTM_NEWLINK)
                .map(|(_, payload)| found_link(payload).map(|(_, link)| link))
                .transpose(),
            Err(e) if e.errno == Errno::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn index_of(&self, name: &str) -> Result<Option<u32>, LinkError> {
        linux::interface_index(self.socket_fd(), name).map_err(LinkError::errno)
    }

    fn create_veth(&self, veth: &Veth<'_>) -> Result<Option<VethIndexes>, LinkError> {
        let replies = self.request(new_veth(veth), CREATE | NLM_F_ECHO)?;
        Ok(replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .filter_map(|(_, payload)| Some((found_link(payload).ok()?, payload)))
            .find(|((name, _), _)| name == veth.name)
            .map(|((_, link), payload)| VethIndexes {
                index: link.index,
                peer: peer_index(payload),
            }))
    }

    fn create_macvlan(&self, macvlan: &Macvlan<'_>) -> Result<(), LinkError> {
        self.request(new_macvlan(macvlan), CREATE).map(drop)
    }

    fn create_ifb(&self, ifb: &Ifb<'_>) -> Result<u32, LinkError> {
        let replies = self.request(new_ifb(ifb.name), CREATE | NLM_F_ECHO)?;
        let echoed = replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .filter_map(|(_, payload)| found_link(payload).ok())
            .find(|(name, _)| name == ifb.name)
            .map(|(_, link)| link.index);
        let index = match echoed {
            Some(index) => index,
            None => match self.find(ifb.name)? {
                Some(link) => link.index,
                None => return Err(LinkError::errno(Errno::ENODEV)),
            },
        };
        // Made but not marked as the caller's: not left behind.
        if let Err(e) = self.request(set_alias(index, ifb.alias), 0) {
            let _ = self.delete(index);
            return Err(e);
        }
        Ok(index)
    }

    fn change(&self, index: u32, change: &LinkChange<'_>) -> Result<(), LinkError> {
        self.request(change_link(index, change), 0).map(drop)
    }

    fn add_address(&self, index: u32, address: &IpAddress) -> Result<(), LinkError> {
        self.request(new_address(index, address), CREATE).map(drop)
    }

    fn add_route(&self, index: u32, route: &IpRoute) -> Result<(), LinkError> {
        self.request(new_route(index, route), CREATE).map(drop)
    }

    fn delete(&self, index: u32) -> Result<(), LinkError> {
        self.request(delete_link(index), 0).map(drop)
    }

    fn add_bridge_vlans(&self, port: u32, vlans: &[BridgeVlan]) -> Result<(), LinkError> {
        self.request(add_bridge_vlans(port, vlans), 0).map(drop)
    }

    fn delete_bridge_vlan(&self, port: u32, vid: u16) -> Result<(), LinkError> {
        self.request(delete_bridge_vlan(port, vid), 0).map(drop)
    }

    fn limit_egress(&self, index: u32, limit: &RateLimit) -> Result<(), LinkError> {
        self.request(new_tbf(index, limit), CREATE).map(drop)
    }

    fn redirect_ingress(&self, index: u32, to: u32) -> Result<(), LinkError> {
        self.request(new_ingress(index), CREATE)?;
        self.request(new_redirect_filter(index, to), CREATE)
            .map(drop)
    }

    fn reshape_egress(&self, index: u32, limit: Option<&RateLimit>) -> Result<(), LinkError> {
        match limit {
            Some(limit) => self
                .request(new_tbf(index, limit), NLM_F_CREATE | NLM_F_REPLACE)
                .map(drop),
            // None there already: the kernel says ENOENT (or EINVAL for
            // a link that never had a qdisc of its own).
            None => self.delete_qdisc(delete_root(index)),
        }
    }

    fn end_redirect(&self, index: u32) -> Result<(), LinkError> {
        self.delete_qdisc(delete_ingress(index))
    }
}

impl HostLinks for Netlink {
    fn create_bridge(&self, bridge: &BridgeLink<'_>) -> Result<u32, LinkError> {
        let replies = self.request(new_bridge(bridge), CREATE | NLM_F_ECHO)?;
        let echoed = replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .filter_map(|(_, payload)| found_link(payload).ok())
            .find(|(name, _)| name == bridge.name)
            .map(|(_, link)| link.index);
        match echoed {
            Some(index) => Ok(index),
            // Kernels before 6.3 do not echo a new link.
            None => self
                .find(bridge.name)?
                .map(|link| link.index)
                .ok_or(LinkError::errno(Errno::ENODEV)),
        }
    }

    fn routes(&self, ipv6: bool) -> Result<Vec<HostRoute>, LinkError> {
        let replies = self.request(dump_routes(ipv6), NLM_F_DUMP)?;
        Ok(replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWROUTE)
            .filter_map(|(_, payload)| host_route(payload))
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The attributes of a serialized request after its fixed header of
    /// `fixed` bytes, as (type, value) pairs.
    fn attributes(bytes: &[u8], fixed: usize) -> Vec<(u16, Vec<u8>)> {
        nested(&payload_of(bytes)[fixed..])
    }

    /// The payload of a serialized request, after its netlink header.
    fn payload_of(bytes: &[u8]) -> Vec<u8> {
        NetlinkBuffer::new_checked(bytes)
            .unwrap()
            .payload()
            .to_vec()
    }

    /// Attributes nested in `value`, as (type, value) pairs.
    fn nested(value: &[u8]) -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(value)
            .map(|nla| {
                let nla = nla.unwrap();
                (nla.kind() & 0x3fff, nla.value().to_vec())
            })
            .collect()
    }

    fn find(attrs: &[(u16, Vec<u8>)], kind: u16) -> Vec<u8> {
        attrs
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("no attribute {kind}"))
            .1
            .clone()
    }

    fn name(value: &[u8]) -> &str {
        std::str::from_utf8(value).unwrap().trim_end_matches('\0')
    }

    #[test]
    fn a_veth_request_carries_both_ends_the_master_the_mtu_and_up() {
        let veth = Veth {
            name: "lxv0",
            mtu: Some(1400),
            master: Some(7),
            up: true,
            group: Some(0x4000_0007),
            peer_name: "eth0",
            peer_mac: Some([0x52, 0x54, 0, 1, 2, 3]),
            peer_netns: Some(Netns::Pid(1234)),
        };
        let bytes = serialize(new_veth(&veth), CREATE, 9);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.message_type(), 16, "RTM_NEWLINK");
        assert_eq!(
            message.flags(),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(message.sequence_number(), 9);
        let payload = message.payload();
        // ifinfomsg: flags and change mask both IFF_UP.
        assert_eq!(&payload[8..12], &1u32.to_ne_bytes());
        assert_eq!(&payload[12..16], &1u32.to_ne_bytes());
        let attrs = attributes(&bytes, 16);
        assert_eq!(name(&find(&attrs, 3)), "lxv0");
        assert_eq!(find(&attrs, 10), 7u32.to_ne_bytes(), "IFLA_MASTER");
        assert_eq!(find(&attrs, 4), 1400u32.to_ne_bytes(), "IFLA_MTU");
        assert_eq!(find(&attrs, 27), 0x4000_0007u32.to_ne_bytes(), "IFLA_GROUP");
        let info = find(&attrs, IFLA_LINKINFO);
        let info = nested(&info);
        assert_eq!(name(&find(&info, IFLA_INFO_KIND)), "veth");
        let data = find(&info, 2);
        let peer = NlasIterator::new(&data[..]).next().unwrap().unwrap();
        assert_eq!(peer.kind() & 0x3fff, 1, "VETH_INFO_PEER");
        // The peer: an ifinfomsg, then its name, MTU, MAC and namespace.
        let peer_attrs = nested(&peer.value()[16..]);
        assert_eq!(name(&find(&peer_attrs, 3)), "eth0");
        assert_eq!(
            find(&peer_attrs, 4),
            1400u32.to_ne_bytes(),
            "the peer's MTU"
        );
        assert_eq!(find(&peer_attrs, 1), vec![0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(
            find(&peer_attrs, 19),
            1234u32.to_ne_bytes(),
            "IFLA_NET_NS_PID"
        );
    }

    #[test]
    fn a_macvlan_request_names_its_lower_device_and_mode() {
        let macvlan = Macvlan {
            name: "eth1",
            lower: 4,
            mtu: Some(9000),
            mode: Mode::Bridge,
            mac: None,
            netns: None,
            up: false,
        };
        let bytes = serialize(new_macvlan(&macvlan), CREATE, 1);
        let attrs = attributes(&bytes, 16);
        assert_eq!(name(&find(&attrs, 3)), "eth1");
        assert_eq!(find(&attrs, 5), 4u32.to_ne_bytes(), "IFLA_LINK");
        assert_eq!(find(&attrs, 4), 9000u32.to_ne_bytes(), "IFLA_MTU");
        let without = Macvlan {
            mtu: None,
            ..macvlan
        };
        let attrs = attributes(&serialize(new_macvlan(&without), CREATE, 1), 16);
        assert!(attrs.iter().all(|(k, _)| *k != 4), "the kernel's MTU");
        let info = find(&attrs, IFLA_LINKINFO);
        let info = nested(&info);
        assert_eq!(name(&find(&info, IFLA_INFO_KIND)), "macvlan");
        let data = find(&info, 2);
        let mode = NlasIterator::new(&data[..]).next().unwrap().unwrap();
        assert_eq!(mode.kind(), 1, "IFLA_MACVLAN_MODE");
        assert_eq!(mode.value(), 4u32.to_ne_bytes(), "MACVLAN_MODE_BRIDGE");
    }

    #[test]
    fn an_ifb_is_made_up_then_given_its_alias() {
        let bytes = serialize(new_ifb("lxvq0"), CREATE, 1);
        let payload = payload_of(&bytes);
        assert_eq!(&payload[8..12], &1u32.to_ne_bytes(), "IFF_UP");
        let attrs = attributes(&bytes, 16);
        assert_eq!(name(&find(&attrs, 3)), "lxvq0");
        let info = nested(&find(&attrs, IFLA_LINKINFO));
        assert_eq!(name(&find(&info, IFLA_INFO_KIND)), "ifb");

        let bytes = serialize(set_alias(8, "lxvirt: web"), 0, 1);
        let payload = payload_of(&bytes);
        assert_eq!(&payload[4..8], &8u32.to_ne_bytes(), "ifi_index");
        assert_eq!(&payload[12..16], &0u32.to_ne_bytes(), "no flag changes");
        let attrs = attributes(&bytes, 16);
        assert_eq!(name(&find(&attrs, IFLA_IFALIAS)), "lxvirt: web");
    }

    #[test]
    fn bridge_vlans_go_to_the_port_as_af_bridge_requests() {
        let vlans = [
            BridgeVlan {
                vid: 10,
                pvid: true,
                untagged: true,
            },
            BridgeVlan {
                vid: 20,
                pvid: false,
                untagged: false,
            },
        ];
        let bytes = serialize(add_bridge_vlans(6, &vlans), 0, 1);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.message_type(), 19, "RTM_SETLINK");
        let payload = message.payload();
        assert_eq!(payload[0], libc::AF_BRIDGE as u8);
        assert_eq!(&payload[4..8], &6u32.to_ne_bytes(), "the port");
        let attrs = attributes(&bytes, 16);
        let spec = nested(&find(&attrs, 26));
        // IFLA_BRIDGE_VLAN_INFO: struct bridge_vlan_info { flags, vid }.
        let infos: Vec<Vec<u8>> = spec
            .iter()
            .filter(|(k, _)| *k == 2)
            .map(|(_, v)| v.clone())
            .collect();
        let info = |flags: u16, vid: u16| [flags.to_ne_bytes(), vid.to_ne_bytes()].concat();
        // BRIDGE_VLAN_INFO_PVID (2) | BRIDGE_VLAN_INFO_UNTAGGED (4).
        assert_eq!(infos, [info(6, 10), info(0, 20)]);

        let bytes = serialize(delete_bridge_vlan(6, 1), 0, 1);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.message_type(), 17, "RTM_DELLINK");
        assert_eq!(message.payload()[0], libc::AF_BRIDGE as u8);
        let spec = nested(&find(&attributes(&bytes, 16), 26));
        assert_eq!(spec, [(2, info(0, 1))]);
    }

    #[test]
    fn a_bridge_reply_gives_its_vlan_settings_and_alias() {
        // ifinfomsg of index 4, IFLA_IFNAME, IFLA_IFALIAS, and
        // IFLA_LINKINFO { kind "bridge", data { vlan_filtering 1,
        // default_pvid 1 } }.
        fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
            let mut bytes = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(value);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            bytes
        }
        let mut payload = vec![0u8; 16];
        payload[4..8].copy_from_slice(&4u32.to_ne_bytes());
        payload.extend(nla(IFLA_IFNAME, b"br0\0"));
        payload.extend(nla(IFLA_IFALIAS, b"lan\0"));
        let data = [
            nla(IFLA_BR_VLAN_FILTERING, &[1]),
            nla(IFLA_BR_VLAN_DEFAULT_PVID, &1u16.to_ne_bytes()),
        ]
        .concat();
        let info = [
            nla(IFLA_INFO_KIND, b"bridge\0"),
            nla(IFLA_INFO_DATA | 0x8000, &data),
        ]
        .concat();
        payload.extend(nla(IFLA_LINKINFO | 0x8000, &info));
        let (name, link) = found_link(&payload).unwrap();
        assert_eq!(name, "br0");
        assert_eq!(
            link,
            FoundLink {
                index: 4,
                kind: Some("bridge".into()),
                alias: Some("lan".into()),
                bridge: Some(BridgeSettings {
                    vlan_filtering: true,
                    default_pvid: 1
                }),
            }
        );
    }

    #[test]
    fn a_change_moves_renames_and_sets_the_state() {
        let change = LinkChange {
            name: Some("dummy0"),
            netns: Some(Netns::Pid(1)),
            up: Some(false),
            ..LinkChange::default()
        };
        let bytes = serialize(change_link(12, &change), 0, 1);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        let payload = message.payload();
        assert_eq!(&payload[4..8], &12u32.to_ne_bytes(), "ifi_index");
        assert_eq!(&payload[8..12], &0u32.to_ne_bytes(), "down");
        assert_eq!(&payload[12..16], &1u32.to_ne_bytes(), "IFF_UP changes");
        let attrs = attributes(&bytes, 16);
        assert_eq!(name(&find(&attrs, 3)), "dummy0");
        assert_eq!(find(&attrs, 19), 1u32.to_ne_bytes());
    }

    #[test]
    fn addresses_get_local_remote_and_broadcast() {
        let v4 = IpAddress {
            address: "10.251.1.2".parse().unwrap(),
            prefix: 24,
            peer: None,
        };
        let bytes = serialize(new_address(3, &v4), CREATE, 1);
        let payload = payload_of(&bytes);
        assert_eq!(payload[0], libc::AF_INET as u8);
        assert_eq!(payload[1], 24);
        assert_eq!(&payload[4..8], &3u32.to_ne_bytes());
        let attrs = attributes(&bytes, 8);
        assert_eq!(find(&attrs, 2), vec![10, 251, 1, 2], "IFA_LOCAL");
        assert_eq!(find(&attrs, 1), vec![10, 251, 1, 2], "IFA_ADDRESS");
        assert_eq!(find(&attrs, 4), vec![10, 251, 1, 255], "IFA_BROADCAST");

        let ptp = IpAddress {
            peer: Some("10.251.9.1".parse().unwrap()),
            prefix: 32,
            ..v4
        };
        let attrs = attributes(&serialize(new_address(3, &ptp), CREATE, 1), 8);
        assert_eq!(find(&attrs, 1), vec![10, 251, 9, 1], "the peer");
        assert!(attrs.iter().all(|(k, _)| *k != 4), "no broadcast");

        let v6 = IpAddress {
            address: "fd00:251::2".parse().unwrap(),
            prefix: 64,
            peer: None,
        };
        let bytes = serialize(new_address(3, &v6), CREATE, 1);
        let payload = payload_of(&bytes);
        assert_eq!(payload[0], libc::AF_INET6 as u8);
        assert_eq!(payload[1], 64);
        let attrs = attributes(&bytes, 8);
        assert_eq!(find(&attrs, 1).len(), 16);
        assert!(attrs.iter().all(|(k, _)| *k != 4), "no broadcast in IPv6");
    }

    #[test]
    fn routes_have_their_destination_gateway_and_device() {
        let default = IpRoute {
            destination: "0.0.0.0".parse().unwrap(),
            prefix: 0,
            gateway: Some("10.251.1.1".parse().unwrap()),
        };
        let bytes = serialize(new_route(3, &default), CREATE, 1);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        assert_eq!(message.message_type(), 24, "RTM_NEWROUTE");
        let payload = message.payload();
        assert_eq!(payload[0], libc::AF_INET as u8);
        assert_eq!(payload[1], 0, "dst_len");
        assert_eq!(payload[4], 254, "main table");
        assert_eq!(payload[6], 0, "scope universe");
        assert_eq!(payload[7], 1, "unicast");
        let attrs = attributes(&bytes, 12);
        assert!(attrs.iter().all(|(k, _)| *k != 1), "no RTA_DST for /0");
        assert_eq!(find(&attrs, 5), vec![10, 251, 1, 1], "RTA_GATEWAY");
        assert_eq!(find(&attrs, 4), 3u32.to_ne_bytes(), "RTA_OIF");

        let v6 = IpRoute {
            destination: "fd00:252::".parse().unwrap(),
            prefix: 48,
            gateway: None,
        };
        let bytes = serialize(new_route(3, &v6), CREATE, 1);
        let payload = payload_of(&bytes);
        assert_eq!(payload[0], libc::AF_INET6 as u8);
        assert_eq!(payload[6], 253, "scope link without a gateway");
        let attrs = attributes(&bytes, 12);
        assert_eq!(find(&attrs, 1).len(), 16, "RTA_DST");
    }

    #[test]
    fn an_extended_ack_gives_the_kernels_message() {
        // NLMSG_ERROR payload: -ENODEV, the capped request header, then
        // NLMSGERR_ATTR_MSG "Unknown device".
        let mut payload = (-(libc::ENODEV)).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        let text = b"Unknown device\0";
        payload.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        payload.resize(payload.len().next_multiple_of(4), 0);
        let err = ack_result(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).unwrap_err();
        assert_eq!(err.errno, Errno::ENODEV);
        assert_eq!(err.to_string(), "Unknown device");
        assert_eq!(ack_result(0, &0i32.to_ne_bytes()), Ok(()));
        let bare = ack_result(0, &(-(libc::EEXIST)).to_ne_bytes()).unwrap_err();
        assert_eq!(bare.to_string(), "File exists");
    }

    /// Runs `f` on a thread of its own in a new network namespace, which
    /// goes away with the thread: nothing reaches the host's.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// A second namespace, held by the returned descriptor.
    fn another_netns() -> std::os::fd::OwnedFd {
        in_new_netns(|| linux::open_namespace(Path::new("/proc/thread-self/ns/net")).unwrap())
    }

    fn new_kind(netlink: &Netlink, name: &str, kind: InfoKind) {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.into()));
        up_header(&mut message.header, true);
        message
            .attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        netlink
            .request(Request::Link(RTM_NEWLINK, message), CREATE)
            .unwrap();
    }

    /// `ip` run in the namespace `netns` (the test's view, not the code's).
    fn ip_in(netns: BorrowedFd<'_>, args: &[&str]) -> String {
        run_in(netns, "ip", args)
    }

    /// `program` (of iproute2) run in the namespace `netns`.
    fn run_in(netns: BorrowedFd<'_>, program: &str, args: &[&str]) -> String {
        let path = format!("/proc/{}/fd/{}", std::process::id(), netns.as_raw_fd());
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={path}"))
            .arg(program)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every operation against the real kernel, in namespaces of the test's
    /// own: a bridge with a veth whose peer is made in a second namespace,
    /// configured from outside through a socket opened there; a macvlan;
    /// a device moved in and back; the errors the plumbing explains.
    #[test]
    fn links_addresses_and_routes_in_private_namespaces() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return;
        }
        let container = another_netns();
        in_new_netns(move || {
            let host_ns = linux::open_namespace(Path::new("/proc/thread-self/ns/net")).unwrap();
            let host = Netlink::open().unwrap();
            new_kind(&host, "lxvtbr0", InfoKind::Bridge);
            // This kernel has no dummy driver: ifb is the stand-alone
            // virtual device, and a veth end (with its peer up) the
            // macvlan's lower device.
            new_kind(&host, "lxvtd1", InfoKind::Ifb);
            host.create_veth(&Veth {
                name: "lxvtd0",
                mtu: None,
                master: None,
                up: true,
                group: None,
                peer_name: "lxvtd0p",
                peer_mac: None,
                peer_netns: None,
            })
            .unwrap();

            let bridge = host.find("lxvtbr0").unwrap().unwrap();
            assert_eq!(bridge.kind.as_deref(), Some("bridge"));
            assert_eq!(host.find("lxvtnone").unwrap(), None);

            let mac = [0x52, 0x54, 0, 0xab, 0xcd, 0xef];
            let veth = Veth {
                name: "lxvth0",
                mtu: None,
                master: Some(bridge.index),
                up: true,
                group: Some(0x4000_0063),
                peer_name: "eth0",
                peer_mac: Some(mac),
                peer_netns: Some(Netns::Fd(container.as_fd())),
            };
            let echoed = host.create_veth(&veth).unwrap();
            let again = host.create_veth(&veth).unwrap_err();
            assert_eq!(again.errno, Errno::EEXIST);
            let host_end = host.find("lxvth0").unwrap().unwrap();
            assert_eq!(host_end.kind.as_deref(), Some("veth"));
            assert_eq!(host.index_of("lxvth0").unwrap(), Some(host_end.index));
            assert_eq!(host.index_of("lxvtnone").unwrap(), None);
            assert_eq!(host.index_of("a-name-too-long-for-a-link").unwrap(), None);
            let shown = ip_in(host_ns.as_fd(), &["-o", "link", "show", "lxvth0"]);
            assert!(
                shown.contains("master lxvtbr0") && shown.contains("group 1073741923"),
                "{shown}"
            );
            // One queue each way: no cut back to one after the making.
            let detailed = ip_in(host_ns.as_fd(), &["-d", "-o", "link", "show", "lxvth0"]);
            assert!(
                detailed.contains("numtxqueues 1 numrxqueues 1"),
                "{detailed}"
            );

            let inside = Netlink::open_in(container.as_fd()).unwrap();
            let eth0 = inside.find("eth0").unwrap().unwrap();
            assert_eq!(
                echoed,
                Some(VethIndexes {
                    index: host_end.index,
                    peer: Some(eth0.index)
                }),
                "the kernel echoes the new link, with its peer"
            );
            inside
                .change(
                    eth0.index,
                    &LinkChange {
                        up: Some(true),
                        ..LinkChange::default()
                    },
                )
                .unwrap();
            let v4 = IpAddress {
                address: "10.251.7.2".parse().unwrap(),
                prefix: 24,
                peer: None,
            };
            let v6 = IpAddress {
                address: "fd00:251:7::2".parse().unwrap(),
                prefix: 64,
                peer: None,
            };
            inside.add_address(eth0.index, &v4).unwrap();
            inside.add_address(eth0.index, &v6).unwrap();
            let default = IpRoute {
                destination: "0.0.0.0".parse().unwrap(),
                prefix: 0,
                gateway: Some("10.251.7.1".parse().unwrap()),
            };
            inside.add_route(eth0.index, &default).unwrap();
            let v6_route = IpRoute {
                destination: "fd00:252::".parse().unwrap(),
                prefix: 48,
                gateway: Some("fd00:251:7::1".parse().unwrap()),
            };
            inside.add_route(eth0.index, &v6_route).unwrap();
            let unreachable = IpRoute {
                destination: "10.251.99.0".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.251.98.1".parse().unwrap()),
            };
            let err = inside.add_route(eth0.index, &unreachable).unwrap_err();
            assert_eq!(err.errno, Errno::ENETUNREACH, "{err:?}");
            let link = ip_in(container.as_fd(), &["-o", "link", "show", "eth0"]);
            assert!(link.contains("52:54:00:ab:cd:ef"), "{link}");
            let addresses = ip_in(container.as_fd(), &["-o", "addr", "show", "dev", "eth0"]);
            assert!(
                addresses.contains("10.251.7.2/24 brd 10.251.7.255"),
                "{addresses}"
            );
            assert!(addresses.contains("fd00:251:7::2/64"), "{addresses}");
            let routes = ip_in(container.as_fd(), &["route"]);
            assert!(
                routes.contains("default via 10.251.7.1 dev eth0"),
                "{routes}"
            );
            let routes = ip_in(container.as_fd(), &["-6", "route"]);
            assert!(
                routes.contains("fd00:252::/48 via fd00:251:7::1 dev eth0"),
                "{routes}"
            );

            // A macvlan on a dummy, made in the other namespace.
            let lower = host.find("lxvtd0").unwrap().unwrap();
            host.create_macvlan(&Macvlan {
                name: "eth1",
                lower: lower.index,
                mtu: None,
                mode: Mode::Bridge,
                mac: Some([0x52, 0x54, 0, 1, 1, 1]),
                netns: Some(Netns::Fd(container.as_fd())),
                up: true,
            })
            .unwrap();
            assert_eq!(
                inside.find("eth1").unwrap().unwrap().kind.as_deref(),
                Some("macvlan")
            );
            let macvlan = ip_in(container.as_fd(), &["-o", "link", "show", "eth1"]);
            assert!(macvlan.contains(",UP"), "made up: {macvlan}");

            // A device moved in, renamed inside, and moved back by index
            // under its own name.
            let dummy = host.find("lxvtd1").unwrap().unwrap();
            host.change(
                dummy.index,
                &LinkChange {
                    netns: Some(Netns::Fd(container.as_fd())),
                    ..LinkChange::default()
                },
            )
            .unwrap();
            assert_eq!(host.find("lxvtd1").unwrap(), None);
            let moved = inside.find("lxvtd1").unwrap().unwrap();
            inside
                .change(
                    moved.index,
                    &LinkChange {
                        name: Some("renamed"),
                        ..LinkChange::default()
                    },
                )
                .unwrap();
            inside
                .change(
                    moved.index,
                    &LinkChange {
                        netns: Some(Netns::Fd(host_ns.as_fd())),
                        name: Some("lxvtd1"),
                        ..LinkChange::default()
                    },
                )
                .unwrap();
            assert_eq!(
                host.find("lxvtd1").unwrap().unwrap().kind.as_deref(),
                Some("ifb")
            );

            // Deleting the host end takes the peer along.
            host.delete(host_end.index).unwrap();
            assert_eq!(inside.find("eth0").unwrap(), None);
            assert_eq!(
                host.delete(host_end.index).unwrap_err().errno,
                Errno::ENODEV
            );

            // A master that is not a bridge (no message from the kernel:
            // the plumbing checks the kind first).
            let err = host
                .create_veth(&Veth {
                    master: Some(lower.index),
                    peer_netns: None,
                    ..veth
                })
                .unwrap_err();
            assert_eq!(err.errno, Errno::EOPNOTSUPP, "{err:?}");
            assert_eq!(
                host.find("lxvth0").unwrap(),
                None,
                "nothing left of a refused request"
            );
        });
    }

    /// Whether the kernel filters VLANs on bridges (it says `EOPNOTSUPP`
    /// without `CONFIG_BRIDGE_VLAN_FILTERING`); prints why a test skips.
    /// With `LXVIRT_VLAN_TESTS=1` (the VM suite, whose kernel has it) a
    /// skip is a failure.
    fn vlan_filtering_bridge(host: &Netlink, name: &str) -> bool {
        use netlink_packet_route::link::InfoBridge;
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.into()));
        up_header(&mut message.header, true);
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])),
        ]));
        match host.request(Request::Link(RTM_NEWLINK, message), CREATE) {
            Ok(_) => true,
            Err(e) if e.errno == Errno::EOPNOTSUPP => {
                assert!(
                    std::env::var_os("LXVIRT_VLAN_TESTS").is_none(),
                    "LXVIRT_VLAN_TESTS is set but this kernel has no bridge VLAN filtering"
                );
                println!(
                    "skipped: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); tests/vm/run tests/vm/guest/net-suite runs it"
                );
                false
            }
            Err(e) => panic!("{e:?}"),
        }
    }

    /// A veth `name` (MTU 1400) with its peer `name`c, on `master` if any;
    /// returns the index of `name` (looked up before Linux 6.3, which
    /// does not echo it).
    fn test_veth(host: &Netlink, name: &str, master: Option<u32>) -> u32 {
        let peer = format!("{name}c");
        let echoed = host
            .create_veth(&Veth {
                name,
                mtu: Some(1400),
                master,
                up: true,
                group: None,
                peer_name: &peer,
                peer_mac: None,
                peer_netns: None,
            })
            .unwrap();
        echoed.map_or_else(|| host.find(name).unwrap().unwrap().index, |e| e.index)
    }

    /// An ifb, token buckets and the ingress redirect against the real
    /// kernel, in a namespace of the test's own, as `tc` sees them.
    #[test]
    fn shaping_in_a_private_namespace() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return;
        }
        in_new_netns(|| {
            let ns = linux::open_namespace(Path::new("/proc/thread-self/ns/net")).unwrap();
            let host = Netlink::open().unwrap();
            let port = test_veth(&host, "lxvtp9", None);
            let link = ip_in(ns.as_fd(), &["-o", "link", "show", "lxvtp9c"]);
            assert!(link.contains("mtu 1400"), "the peer's MTU: {link}");
            let ifb = host
                .create_ifb(&Ifb {
                    name: "lxvtq9",
                    alias: "lxvirt test",
                })
                .unwrap();
            let found = host.find("lxvtq9").unwrap().unwrap();
            assert_eq!(found.index, ifb);
            assert_eq!(found.kind.as_deref(), Some("ifb"));
            assert_eq!(found.alias.as_deref(), Some("lxvirt test"));
            assert!(ip_in(ns.as_fd(), &["-o", "link", "show", "lxvtq9"]).contains(",UP"));
            let limit = RateLimit {
                rate: 2_048_000,
                burst: 65_536,
                peak: Some(4_096_000),
                peak_burst: 1418,
                queue: 200_000,
            };
            host.limit_egress(port, &limit).unwrap();
            host.limit_egress(
                ifb,
                &RateLimit {
                    peak: None,
                    ..limit
                },
            )
            .unwrap();
            host.redirect_ingress(port, ifb).unwrap();
            let qdiscs = run_in(ns.as_fd(), "tc", &["qdisc", "show", "dev", "lxvtp9"]);
            assert!(
                qdiscs.contains("qdisc tbf 1: root")
                    && qdiscs.contains("rate 16384Kbit burst 64Kb")
                    && qdiscs.contains("peakrate 32768Kbit")
                    && qdiscs.contains("qdisc ingress ffff:"),
                "{qdiscs}"
            );
            let qdiscs = run_in(ns.as_fd(), "tc", &["qdisc", "show", "dev", "lxvtq9"]);
            assert!(
                qdiscs.contains("qdisc tbf 1: root") && !qdiscs.contains("peakrate"),
                "{qdiscs}"
            );
            let filters = run_in(
                ns.as_fd(),
                "tc",
                &["filter", "show", "dev", "lxvtp9", "ingress"],
            );
            assert!(
                filters.contains("mirred (Egress Redirect to device lxvtq9) stolen"),
                "{filters}"
            );
            // A second root qdisc is refused, not stacked.
            let err = host.limit_egress(port, &limit).unwrap_err();
            assert_eq!(err.errno, Errno::EEXIST, "{err:?}");
            // A peak not above the average is refused by the kernel.
            let other = test_veth(&host, "lxvtp8", None);
            let err = host
                .limit_egress(
                    other,
                    &RateLimit {
                        peak: Some(limit.rate),
                        ..limit
                    },
                )
                .unwrap_err();
            assert_eq!(err.errno, Errno::EINVAL, "{err:?}");
        });
    }

    /// Bridge VLANs against the real kernel, as `bridge` sees them.
    #[test]
    fn bridge_vlans_in_a_private_namespace() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: needs root");
            return;
        }
        in_new_netns(|| {
            let ns = linux::open_namespace(Path::new("/proc/thread-self/ns/net")).unwrap();
            let host = Netlink::open().unwrap();
            new_kind(&host, "lxvtbr8", InfoKind::Bridge);
            let plain = host.find("lxvtbr8").unwrap().unwrap().bridge.unwrap();
            assert!(!plain.vlan_filtering);
            if !vlan_filtering_bridge(&host, "lxvtbr9") {
                return;
            }
            let bridge = host.find("lxvtbr9").unwrap().unwrap();
            assert_eq!(
                bridge.bridge,
                Some(BridgeSettings {
                    vlan_filtering: true,
                    default_pvid: 1
                })
            );
            let port = test_veth(&host, "lxvtp9", Some(bridge.index));
            let vlans = [
                BridgeVlan {
                    vid: 10,
                    pvid: true,
                    untagged: true,
                },
                BridgeVlan {
                    vid: 20,
                    pvid: false,
                    untagged: false,
                },
            ];
            host.add_bridge_vlans(port, &vlans).unwrap();
            host.delete_bridge_vlan(port, 1).unwrap();
            let shown = run_in(
                ns.as_fd(),
                "bridge",
                &["-j", "vlan", "show", "dev", "lxvtp9"],
            );
            let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
            let vlans = &shown[0]["vlans"];
            assert_eq!(vlans.as_array().map(Vec::len), Some(2), "{shown}");
            assert_eq!(vlans[0]["vlan"], 10);
            assert_eq!(
                vlans[0]["flags"],
                serde_json::json!(["PVID", "Egress Untagged"])
            );
            assert_eq!(vlans[1]["vlan"], 20);
            assert!(vlans[1].get("flags").is_none(), "{shown}");
        });
    }
}
