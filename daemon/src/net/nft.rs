//! Set elements of nftables, added and deleted over nf_tables' netlink
//! interface from the daemon itself.
//!
//! Tables, chains and rules are few and change only when a network starts,
//! so they go through `nft` (libnftables JSON, [`crate::net::firewall`]).
//! Set elements change at every port's start and stop: a process per
//! change would cost more than the rest of a container's start, so they
//! are sent here as one nf_tables batch (a transaction: all of it or
//! nothing) on a `NETLINK_NETFILTER` socket.

use std::os::fd::AsRawFd;

use netlink_packet_core::NetlinkBuffer;
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use super::link::{LinkError, ack_result, open_socket};
use crate::sys::Errno;

/// One change to a set: its element `key` (the bytes nftables compares,
/// see [`Key`]) added to or deleted from set `set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    pub verb: Verb,
    pub set: &'static str,
    pub key: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Added; an element already there is no error.
    Add,
    /// Deleted; a missing one is an error (nftables refuses it), so
    /// callers that do not know add it first in the same batch.
    Delete,
}

/// The bytes of a set key, built part by part as nftables lays out a
/// concatenation: each part padded with zeros to a multiple of 4 bytes.
#[derive(Debug, Default)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new() -> Key {
        Key::default()
    }

    /// An interface name (`ifname`: 16 bytes, NUL-padded).
    pub fn ifname(self, name: &str) -> Key {
        let mut bytes = [0u8; IFNAMSIZ];
        let len = name.len().min(IFNAMSIZ - 1);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        self.part(&bytes)
    }

    /// A MAC address (`ether_addr`).
    pub fn ether(self, mac: [u8; 6]) -> Key {
        self.part(&mac)
    }

    /// An IPv4 address (`ipv4_addr`, network byte order).
    pub fn ipv4(self, address: std::net::Ipv4Addr) -> Key {
        self.part(&address.octets())
    }

    fn part(mut self, bytes: &[u8]) -> Key {
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0
    }
}

/// The kernel refused a batch, or it could not be sent or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot change the set elements of nftables table {family} {table}: {source}")]
pub struct NftError {
    pub family: &'static str,
    pub table: String,
    #[source]
    pub source: LinkError,
}

/// nftables' address families, as netlink numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bridge,
}

impl Family {
    fn number(self) -> u8 {
        match self {
            Family::Bridge => NFPROTO_BRIDGE,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::Bridge => "bridge",
        }
    }
}

const IFNAMSIZ: usize = 16;
const NFPROTO_BRIDGE: u8 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HEADER_LEN: usize = 16;
const RECV_BUFFER: usize = 16 * 1024;
/// How long the kernel may take to answer a batch.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Applies `changes` to sets of table `table` of `family`, in order and
/// as one transaction. Nothing to change costs nothing.
pub fn apply(family: Family, table: &str, changes: &[ElementChange]) -> Result<(), NftError> {
    if changes.is_empty() {
        return Ok(());
    }
    let refused = |source| NftError {
        family: family.name(),
        table: table.to_owned(),
        source,
    };
    let (bytes, last) = batch(family, table, changes, 1);
    let socket = open().map_err(refused)?;
    socket
        .send(&bytes, 0)
        .map_err(|e| refused(LinkError::io(e)))?;
    wait_ack(&socket, last).map_err(refused)
}

fn open() -> Result<Socket, LinkError> {
    let socket = open_socket(NETLINK_NETFILTER)?;
    set_receive_timeout(&socket)?;
    Ok(socket)
}

fn set_receive_timeout(socket: &Socket) -> Result<(), LinkError> {
    let timeout = libc::timeval {
        tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: the descriptor is the socket's, open for the call; the
    // option value is a timeval that lives across it, with its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(LinkError::io(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The batch of `changes`: consecutive changes of one verb and set share
/// a message. Sequence numbers start at `first`; only the last message
/// asks for an acknowledgement (errors come back for every refused one
/// before it). Returns the bytes and the last message's sequence.
fn batch(family: Family, table: &str, changes: &[ElementChange], first: u32) -> (Vec<u8>, u32) {
    let mut bytes = Vec::new();
    let mut sequence = first;
    message(
        &mut bytes,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        sequence,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    let groups: Vec<&[ElementChange]> = changes
        .chunk_by(|a, b| a.verb == b.verb && a.set == b.set)
        .collect();
    for (index, group) in groups.iter().enumerate() {
        sequence += 1;
        let (kind, create) = match group[0].verb {
            Verb::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
            Verb::Delete => (NFT_MSG_DELSETELEM, 0),
        };
        let ack = if index + 1 == groups.len() {
            NLM_F_ACK
        } else {
            0
        };
        message(
            &mut bytes,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | create | ack,
            sequence,
            family.number(),
            0,
            |out| {
                attribute(out, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
                attribute(out, NFTA_SET_ELEM_LIST_SET, &c_string(group[0].set));
                nested(out, NFTA_SET_ELEM_LIST_ELEMENTS, |out| {
                    for change in *group {
                        nested(out, NFTA_LIST_ELEM, |out| {
                            nested(out, NFTA_SET_ELEM_KEY, |out| {
                                attribute(out, NFTA_DATA_VALUE, &change.key);
                            });
                        });
                    }
                });
            },
        );
    }
    let last = sequence;
    message(
        &mut bytes,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        sequence + 1,
        0,
        NFNL_SUBSYS_NFTABLES,
        |_| {},
    );
    (bytes, last)
}

/// Appends one message: netlink header, nfnetlink header (family,
/// version 0, resource id), then what `body` writes.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    sequence: u32,
    family: u8,
    resource: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&[0u8; NLMSG_HEADER_LEN]);
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&resource.to_be_bytes());
    body(out);
    let length = out.len() - start;
    let mut header = NetlinkBuffer::new(&mut out[start..]);
    header.set_length(length as u32);
    header.set_message_type(kind);
    header.set_flags(flags);
    header.set_sequence_number(sequence);
    header.set_port_number(0);
}

fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    body(out);
    let length = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&length.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

/// Reads replies until the acknowledgement of message `last`; the first
/// refusal of any message of the batch ends it (the kernel then applied
/// nothing).
fn wait_ack(socket: &Socket, last: u32) -> Result<(), LinkError> {
    let mut buffer = Vec::with_capacity(RECV_BUFFER);
    loop {
        buffer.clear();
        let read = loop {
            match socket.recv(&mut buffer, 0) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let read = read.map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                LinkError {
                    errno: Errno::ETIMEDOUT,
                    message: Some("the kernel did not answer the nf_tables batch".to_owned()),
                }
            } else {
                LinkError::io(e)
            }
        })?;
        let mut offset = 0;
        while offset < read.min(buffer.len()) {
            let Ok(message) = NetlinkBuffer::new_checked(&buffer[offset..]) else {
                break;
            };
            let length = message.length() as usize;
            if length < NLMSG_HEADER_LEN {
                break;
            }
            offset += length.next_multiple_of(4);
            if message.message_type() != NLMSG_ERROR {
                continue;
            }
            ack_result(message.flags(), message.payload())?;
            if message.sequence_number() == last {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn concatenated_keys_pad_every_part_to_four_bytes() {
        let key = Key::new()
            .ifname("lxv1234")
            .ether([0x52, 0x54, 0, 1, 2, 3])
            .ipv4(Ipv4Addr::new(10, 0, 0, 7))
            .bytes();
        assert_eq!(key.len(), 16 + 8 + 4);
        assert_eq!(&key[..8], b"lxv1234\0");
        assert!(key[8..16].iter().all(|&b| b == 0));
        assert_eq!(&key[16..24], &[0x52, 0x54, 0, 1, 2, 3, 0, 0]);
        assert_eq!(&key[24..], &[10, 0, 0, 7]);
    }

    #[test]
    fn a_name_too_long_keeps_its_terminator() {
        let key = Key::new().ifname("abcdefghijklmnopqrst").bytes();
        assert_eq!(key.len(), 16);
        assert_eq!(key[15], 0);
    }

    /// Splits a batch into (type, flags, sequence, payload).
    fn messages(bytes: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < bytes.len() {
            let m = NetlinkBuffer::new_checked(&bytes[offset..]).unwrap();
            out.push((
                m.message_type(),
                m.flags(),
                m.sequence_number(),
                m.payload().to_vec(),
            ));
            offset += (m.length() as usize).next_multiple_of(4);
        }
        out
    }

    fn change(verb: Verb, set: &'static str, byte: u8) -> ElementChange {
        ElementChange {
            verb,
            set,
            key: vec![byte; 4],
        }
    }

    #[test]
    fn a_batch_groups_runs_of_one_verb_and_set_and_acks_its_last_message() {
        let changes = [
            change(Verb::Add, "a", 1),
            change(Verb::Add, "a", 2),
            change(Verb::Add, "b", 3),
            change(Verb::Delete, "b", 3),
        ];
        let (bytes, last) = batch(Family::Bridge, "lxvirt-n", &changes, 7);
        let messages = messages(&bytes);
        let kinds: Vec<u16> = messages.iter().map(|m| m.0).collect();
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                0x0a0c,
                0x0a0c,
                0x0a0e,
                NFNL_MSG_BATCH_END
            ]
        );
        let sequences: Vec<u32> = messages.iter().map(|m| m.2).collect();
        assert_eq!(sequences, [7, 8, 9, 10, 11]);
        assert_eq!(last, 10);
        let acked: Vec<bool> = messages.iter().map(|m| m.1 & NLM_F_ACK != 0).collect();
        assert_eq!(acked, [false, false, false, true, false]);
        assert_eq!(messages[1].1 & NLM_F_CREATE, NLM_F_CREATE);
        assert_eq!(messages[3].1 & NLM_F_CREATE, 0);
        // The batch is addressed to nf_tables; its messages to the family.
        assert_eq!(&messages[0].3, &[0, 0, 0, 10]);
        assert_eq!(&messages[1].3[..4], &[NFPROTO_BRIDGE, 0, 0, 0]);
    }

    #[test]
    fn a_message_nests_each_key_in_its_element() {
        let changes = [change(Verb::Add, "set", 9), change(Verb::Add, "set", 8)];
        let (bytes, _) = batch(Family::Bridge, "t", &changes, 1);
        let payload = &messages(&bytes)[1].3[4..];
        let attrs: Vec<(u16, Vec<u8>)> = netlink_packet_core::NlasIterator::new(payload)
            .map(|nla| {
                let nla = nla.unwrap();
                (nla.kind(), nla.value().to_vec())
            })
            .collect();
        assert_eq!(attrs[0], (NFTA_SET_ELEM_LIST_TABLE, b"t\0".to_vec()));
        assert_eq!(attrs[1], (NFTA_SET_ELEM_LIST_SET, b"set\0".to_vec()));
        assert_eq!(attrs[2].0, NFTA_SET_ELEM_LIST_ELEMENTS);
        let elements: Vec<Vec<u8>> = netlink_packet_core::NlasIterator::new(&attrs[2].1[..])
            .map(|element| {
                let element = element.unwrap();
                assert_eq!(element.kind(), NFTA_LIST_ELEM);
                let key = netlink_packet_core::NlasIterator::new(element.value())
                    .next()
                    .unwrap()
                    .unwrap();
                assert_eq!(key.kind(), NFTA_SET_ELEM_KEY);
                let value = netlink_packet_core::NlasIterator::new(key.value())
                    .next()
                    .unwrap()
                    .unwrap();
                assert_eq!(value.kind(), NFTA_DATA_VALUE);
                value.value().to_vec()
            })
            .collect();
        assert_eq!(elements, [vec![9; 4], vec![8; 4]]);
    }
}
