//! Traffic control requests: a token bucket (`tbf`) as a link's root
//! qdisc, and an `ingress` qdisc whose match-all `u32` filter redirects
//! every arriving packet to another link (an ifb device) with `mirred`.
//!
//! netlink-packet-route has the message, the `u32` selector and the
//! `mirred` action; the `tbf` options are built here (`struct
//! tc_tbf_qopt` and its attributes, from `linux/pkt_sched.h`).
//!
//! Rates are link-layer aware (`TC_LINKLAYER_ETHERNET` in each `struct
//! tc_ratespec`): the kernel then computes transmission times from the
//! rate itself (`psched_ratecfg_precompute`) and wants no rate table, and
//! the bucket sizes go in bytes (`TCA_TBF_BURST`, `TCA_TBF_PBURST`)
//! rather than in scheduler ticks.

use netlink_packet_core::DefaultNla;
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};

use super::RateLimit;
use super::link::Request;

/// rtnetlink message types.
pub(super) const RTM_NEWQDISC: u16 = 36;
pub(super) const RTM_DELQDISC: u16 = 37;
pub(super) const RTM_NEWTFILTER: u16 = 44;

/// `TCA_TBF_*` attributes of the `tbf` options.
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_PRATE64: u16 = 5;
const TCA_TBF_BURST: u16 = 6;
const TCA_TBF_PBURST: u16 = 7;
/// `enum tc_link_layer`.
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `sizeof(struct tc_ratespec)`, `sizeof(struct tc_tbf_qopt)`.
const RATESPEC_LEN: usize = 12;
const TBF_QOPT_LEN: usize = 2 * RATESPEC_LEN + 12;
/// The root qdisc's handle, `1:`.
const ROOT_HANDLE: TcHandle = TcHandle { major: 1, minor: 0 };
/// The ingress qdisc's handle, `ffff:`, which its filters name as parent.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// `ETH_P_ALL`: a filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// The redirecting filter's priority (the only filter there).
const FILTER_PRIORITY: u16 = 1;

/// `struct tc_ratespec` of `rate` bytes per second: `cell_log`,
/// `linklayer`, `overhead`, `cell_align`, `mpu`, then the rate, saturated
/// (the whole value then goes in a `*_RATE64` attribute).
fn ratespec(rate: u64) -> [u8; RATESPEC_LEN] {
    let mut spec = [0u8; RATESPEC_LEN];
    spec[1] = TC_LINKLAYER_ETHERNET;
    spec[8..].copy_from_slice(&saturated(rate).to_ne_bytes());
    spec
}

fn saturated(rate: u64) -> u32 {
    u32::try_from(rate).unwrap_or(u32::MAX)
}

fn attribute(kind: u16, value: &[u8]) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value.to_vec()))
}

/// The `tbf` options of `limit`: `struct tc_tbf_qopt` (rate, peak rate,
/// queue limit; `buffer` and `mtu` left 0, the burst attributes replace
/// them), the buckets in bytes, and the 64-bit rates when needed.
pub fn tbf_options(limit: &RateLimit) -> Vec<TcOption> {
    let mut qopt = [0u8; TBF_QOPT_LEN];
    qopt[..RATESPEC_LEN].copy_from_slice(&ratespec(limit.rate));
    if let Some(peak) = limit.peak {
        qopt[RATESPEC_LEN..2 * RATESPEC_LEN].copy_from_slice(&ratespec(peak));
    }
    qopt[2 * RATESPEC_LEN..2 * RATESPEC_LEN + 4].copy_from_slice(&limit.queue.to_ne_bytes());
    let mut options = vec![
        attribute(TCA_TBF_PARMS, &qopt),
        attribute(TCA_TBF_BURST, &limit.burst.to_ne_bytes()),
    ];
    if limit.rate > u64::from(u32::MAX) {
        options.push(attribute(TCA_TBF_RATE64, &limit.rate.to_ne_bytes()));
    }
    if let Some(peak) = limit.peak {
        options.push(attribute(TCA_TBF_PBURST, &limit.peak_burst.to_ne_bytes()));
        if peak > u64::from(u32::MAX) {
            options.push(attribute(TCA_TBF_PRATE64, &peak.to_ne_bytes()));
        }
    }
    options
}

/// `RTM_NEWQDISC` of a `tbf` root qdisc (`tc qdisc add dev INDEX root
/// handle 1: tbf rate … burst … [peakrate … mtu …] limit …`).
pub fn new_tbf(index: u32, limit: &RateLimit) -> Request {
    let mut message = TcMessage::with_index(index as i32);
    message.header.handle = ROOT_HANDLE;
    message.header.parent = TcHandle::ROOT;
    message.attributes.push(TcAttribute::Kind("tbf".into()));
    message
        .attributes
        .push(TcAttribute::Options(tbf_options(limit)));
    Request::Tc(RTM_NEWQDISC, message)
}

/// `RTM_DELQDISC` of link `index`'s root qdisc (`tc qdisc del dev INDEX
/// root`): the link's default comes back.
pub fn delete_root(index: u32) -> Request {
    let mut message = TcMessage::with_index(index as i32);
    message.header.parent = TcHandle::ROOT;
    Request::Tc(RTM_DELQDISC, message)
}

/// `RTM_DELQDISC` of link `index`'s ingress qdisc, its filters with it
/// (`tc qdisc del dev INDEX ingress`).
pub fn delete_ingress(index: u32) -> Request {
    let mut message = TcMessage::with_index(index as i32);
    message.header.handle = INGRESS_HANDLE;
    message.header.parent = TcHandle::INGRESS;
    Request::Tc(RTM_DELQDISC, message)
}

/// `RTM_NEWQDISC` of the ingress qdisc (`tc qdisc add dev INDEX ingress`).
pub fn new_ingress(index: u32) -> Request {
    let mut message = TcMessage::with_index(index as i32);
    message.header.handle = INGRESS_HANDLE;
    message.header.parent = TcHandle::INGRESS;
    message.attributes.push(TcAttribute::Kind("ingress".into()));
    Request::Tc(RTM_NEWQDISC, message)
}

/// `RTM_NEWTFILTER` of a `u32` filter on the ingress qdisc that matches
/// every packet and redirects it to the egress of link `to` (`tc filter
/// add dev INDEX parent ffff: protocol all prio 1 u32 match u32 0 0
/// action mirred egress redirect dev TO`).
pub fn new_redirect_filter(index: u32, to: u32) -> Request {
    let mut selector = TcU32Selector::default();
    selector.flags = TcU32SelectorFlags::Terminal;
    selector.nkeys = 1;
    // Offset 0, mask 0, value 0: every packet matches.
    selector.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    // A redirected packet is the ifb's now: the filter's path ends.
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    let mut message = TcMessage::with_index(index as i32);
    message.header.parent = INGRESS_HANDLE;
    // tcm_info: the priority above the protocol, which is big-endian.
    message.header.info =
        (u32::from(FILTER_PRIORITY) << 16) | u32::from(u16::from_ne_bytes(ETH_P_ALL.to_be_bytes()));
    message
        .attributes
        .push(TcAttribute::Kind(TcFilterU32::KIND.into()));
    message.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(selector)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    Request::Tc(RTM_NEWTFILTER, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use netlink_packet_core::{NetlinkBuffer, NlasIterator};

    use super::*;
    use crate::net::link::serialize;

    /// Attributes as (type without flags, value).
    type Attributes = Vec<(u16, Vec<u8>)>;

    /// The attributes in `bytes`.
    fn nested(bytes: &[u8]) -> Attributes {
        NlasIterator::new(bytes)
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

    /// The message type, `struct tcmsg` and attributes of a request.
    fn parts(request: Request) -> (u16, Vec<u8>, Attributes) {
        let bytes = serialize(request, 0, 1);
        let message = NetlinkBuffer::new_checked(&bytes[..]).unwrap();
        let payload = message.payload();
        (
            message.message_type(),
            payload[..20].to_vec(),
            nested(&payload[20..]),
        )
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn deletions_name_the_root_or_the_ingress_qdisc_of_the_link() {
        let (kind, header, attrs) = parts(delete_root(7));
        assert_eq!(kind, RTM_DELQDISC);
        assert_eq!(u32_at(&header, 4), 7, "ifindex");
        assert_eq!(u32_at(&header, 8), 0, "no handle");
        assert_eq!(u32_at(&header, 12), 0xffff_ffff, "parent: root");
        assert!(attrs.is_empty());
        let (kind, header, _) = parts(delete_ingress(7));
        assert_eq!(kind, RTM_DELQDISC);
        assert_eq!(u32_at(&header, 8), 0xffff_0000, "handle ffff:");
        assert_eq!(u32_at(&header, 12), 0xffff_fff1, "parent: ingress");
    }

    fn text(value: &[u8]) -> &str {
        std::str::from_utf8(value).unwrap().trim_end_matches('\0')
    }

    #[test]
    fn a_token_bucket_is_link_layer_aware_and_sized_in_bytes() {
        let limit = RateLimit {
            rate: 2_048_000,
            burst: 65_536,
            peak: None,
            peak_burst: 1518,
            queue: 167_936,
        };
        let (kind, tcmsg, attrs) = parts(new_tbf(7, &limit));
        assert_eq!(kind, 36, "RTM_NEWQDISC");
        assert_eq!(tcmsg[0], 0, "AF_UNSPEC");
        assert_eq!(u32_at(&tcmsg, 4), 7, "tcm_ifindex");
        assert_eq!(u32_at(&tcmsg, 8), 0x0001_0000, "handle 1:");
        assert_eq!(u32_at(&tcmsg, 12), 0xffff_ffff, "parent root");
        assert_eq!(text(&find(&attrs, 1)), "tbf", "TCA_KIND");
        let options = nested(&find(&attrs, 2));
        let qopt = find(&options, TCA_TBF_PARMS);
        assert_eq!(qopt.len(), 36, "sizeof(struct tc_tbf_qopt)");
        // rate: cell_log 0, linklayer Ethernet, overhead, cell_align and
        // mpu 0, then bytes per second.
        assert_eq!(&qopt[..8], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32_at(&qopt, 8), 2_048_000);
        assert_eq!(&qopt[12..24], &[0; 12], "no peak rate");
        assert_eq!(u32_at(&qopt, 24), 167_936, "limit");
        assert_eq!(u32_at(&qopt, 28), 0, "buffer: TCA_TBF_BURST instead");
        assert_eq!(u32_at(&qopt, 32), 0, "mtu: no peak bucket");
        assert_eq!(find(&options, TCA_TBF_BURST), 65_536u32.to_ne_bytes());
        assert_eq!(
            options.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [TCA_TBF_PARMS, TCA_TBF_BURST],
            "no rate table, no peak, no 64-bit rate"
        );
    }

    #[test]
    fn a_peak_gets_its_own_bucket_and_big_rates_their_64_bit_attributes() {
        let limit = RateLimit {
            rate: 5_000_000_000,
            burst: 1 << 20,
            peak: Some(6_000_000_000),
            peak_burst: 9018,
            queue: u32::MAX,
        };
        let (_, _, attrs) = parts(new_tbf(3, &limit));
        let options = nested(&find(&attrs, 2));
        let qopt = find(&options, TCA_TBF_PARMS);
        assert_eq!(u32_at(&qopt, 8), u32::MAX, "saturated rate");
        assert_eq!(&qopt[12..14], &[0, 1], "peak: link layer Ethernet");
        assert_eq!(u32_at(&qopt, 20), u32::MAX, "saturated peak rate");
        assert_eq!(
            find(&options, TCA_TBF_RATE64),
            5_000_000_000u64.to_ne_bytes()
        );
        assert_eq!(
            find(&options, TCA_TBF_PRATE64),
            6_000_000_000u64.to_ne_bytes()
        );
        assert_eq!(find(&options, TCA_TBF_PBURST), 9018u32.to_ne_bytes());
    }

    #[test]
    fn ingress_and_its_redirecting_filter() {
        let (kind, tcmsg, attrs) = parts(new_ingress(5));
        assert_eq!(kind, 36);
        assert_eq!(u32_at(&tcmsg, 8), 0xffff_0000, "handle ffff:");
        assert_eq!(u32_at(&tcmsg, 12), 0xffff_fff1, "TC_H_INGRESS");
        assert_eq!(text(&find(&attrs, 1)), "ingress");

        let (kind, tcmsg, attrs) = parts(new_redirect_filter(5, 9));
        assert_eq!(kind, 44, "RTM_NEWTFILTER");
        assert_eq!(u32_at(&tcmsg, 4), 5);
        assert_eq!(u32_at(&tcmsg, 8), 0, "the kernel picks the handle");
        assert_eq!(u32_at(&tcmsg, 12), 0xffff_0000, "on the ingress qdisc");
        let info = u32_at(&tcmsg, 16);
        assert_eq!(info >> 16, 1, "priority");
        assert_eq!((info as u16).to_ne_bytes(), [0, 3], "ETH_P_ALL, big-endian");
        assert_eq!(text(&find(&attrs, 1)), "u32");
        let options = nested(&find(&attrs, 2));
        // struct tc_u32_sel: TC_U32_TERMINAL, one key, then the key:
        // mask 0 and value 0 at offset 0.
        let selector = find(&options, 5);
        assert_eq!(selector.len(), 16 + 16);
        assert_eq!(selector[0], 1, "TC_U32_TERMINAL");
        assert_eq!(selector[2], 1, "nkeys");
        assert_eq!(&selector[16..], &[0; 16], "match u32 0 0 at 0");
        let actions = nested(&find(&options, 7));
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].0, 1, "the first action");
        let action = nested(&actions[0].1);
        assert_eq!(text(&find(&action, 1)), "mirred", "TCA_ACT_KIND");
        let mirred = nested(&find(&action, 2));
        // struct tc_mirred: tc_gen (index, capab, action, refcnt,
        // bindcnt), eaction, ifindex.
        let parms = find(&mirred, 2);
        assert_eq!(parms.len(), 28);
        assert_eq!(u32_at(&parms, 8), 4, "TC_ACT_STOLEN");
        assert_eq!(u32_at(&parms, 20), 1, "TCA_EGRESS_REDIR");
        assert_eq!(u32_at(&parms, 24), 9, "to the ifb");
    }
}
