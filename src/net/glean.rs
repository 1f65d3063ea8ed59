//! Learning a sender's MAC from the frame it sends us ("gleaning"), so that the VM can answer
//! the first packet of a conversation.
//!
//! smoltcp fills its neighbour cache only from ARP and neighbour discovery, and drops a reply
//! whose destination it has not resolved (it asks, and the reply is gone). A host that knows
//! the VM's MAC already (dnsmasq writes the leased address into its ARP table; a router has
//! the VM's router solicitation) sends its first echo request without asking: that ping went
//! unanswered, and so did the first one after a quiet minute, when smoltcp's entry expired.
//! Here, when a unicast IPv4 or IPv6 frame for one of the VM's addresses arrives from a sender
//! not learnt in the last [`REFRESH_US`], the stack is first handed the ARP reply (or neighbour
//! advertisement) that sender would have given, then the frame itself.
//!
//! The stack's cache is small: every ARP or neighbour discovery frame it takes may displace an
//! entry (an ARP storm from forged peers displaced the router's, and the next ping went
//! unanswered). After one, every sender is taught again.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Address, Ipv6Address, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
};

/// A sender is taught again after this long (smoltcp keeps an entry 60 s).
const REFRESH_US: u64 = 20_000_000;
/// Senders remembered; the oldest is forgotten first.
const SENDERS: usize = 8;
/// Ethernet, IPv4 and IPv6 header sizes, and where their fields are.
const ETHERNET: usize = 14;
const IPV4_SOURCE: usize = ETHERNET + 12;
const IPV4_DESTINATION: usize = ETHERNET + 16;
const IPV6_SOURCE: usize = ETHERNET + 8;
const IPV6_DESTINATION: usize = ETHERNET + 24;
const IPV6_HEADER: usize = 40;
/// IPv4's shortest header and its protocol field; UDP, and DHCP's ports.
const IPV4_HEADER: usize = 20;
const IPV4_PROTOCOL: usize = ETHERNET + 9;
const UDP: u8 = 17;
const DHCP_SERVER_PORT: u8 = 67;
const DHCP_CLIENT_PORT: u8 = 68;
const IPV6_NEXT_HEADER: usize = ETHERNET + 6;
/// ICMPv6, and its neighbour discovery messages: router solicitation to redirect.
const ICMPV6: u8 = 58;
const NDISC: core::ops::RangeInclusive<u8> = 133..=137;
/// The largest frame made here: a neighbour advertisement with its link-layer option.
pub const FRAME: usize = ETHERNET + IPV6_HEADER + 32;

/// One sender learnt: its address (an IPv4 address in the first four bytes, or IPv6), its MAC
/// and when.
#[derive(Clone, Copy, Default)]
struct Sender {
    address: [u8; 16],
    mac: [u8; 6],
    at: u64,
}

/// The VM's own addresses, and the senders it has taught the stack.
#[derive(Default)]
pub struct Gleaner {
    pub mac: [u8; 6],
    pub ipv4: Option<[u8; 4]>,
    pub ipv6: [Option<[u8; 16]>; 3],
    /// The IPv4 address and MAC of the last DHCP server (or relay agent) that wrote to the VM:
    /// where the release goes, if that is the server the lease names.
    pub dhcp_server: Option<([u8; 4], [u8; 6])>,
    senders: [Sender; SENDERS],
}

impl Gleaner {
    /// A gleaner for the card with this MAC, no address yet.
    pub fn new(mac: [u8; 6]) -> Gleaner {
        Gleaner { mac, ..Gleaner::default() }
    }

    /// The frame that teaches the stack `frame`'s sender, if it is one to teach now.
    pub fn lesson(&mut self, frame: &[u8], now_us: u64) -> Option<([u8; FRAME], usize)> {
        if frame.len() < ETHERNET {
            return None;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if updates_neighbours(ethertype, frame) {
            // It teaches the stack itself; and a lesson for it would be followed by the same
            // frame again, forgetting again: the card's ring would never move on.
            self.senders = [Sender::default(); SENDERS];
            return None;
        }
        self.note_dhcp_server(ethertype, frame);
        if frame[..6] != self.mac {
            return None;
        }
        let mac: [u8; 6] = frame[6..12].try_into().ok()?;
        if mac[0] & 1 != 0 {
            return None;
        }
        let mut address = [0u8; 16];
        let ipv4 = match EthernetProtocol::from(ethertype) {
            EthernetProtocol::Ipv4 if frame.len() >= IPV4_DESTINATION + 4 => {
                let ours = self.ipv4?;
                if frame[IPV4_DESTINATION..IPV4_DESTINATION + 4] != ours {
                    return None;
                }
                address[..4].copy_from_slice(&frame[IPV4_SOURCE..IPV4_SOURCE + 4]);
                true
            }
            EthernetProtocol::Ipv6 if frame.len() >= ETHERNET + IPV6_HEADER => {
                let destination = &frame[IPV6_DESTINATION..IPV6_DESTINATION + 16];
                if !self.ipv6.iter().flatten().any(|ours| ours[..] == *destination) {
                    return None;
                }
                address.copy_from_slice(&frame[IPV6_SOURCE..IPV6_SOURCE + 16]);
                false
            }
            _ => return None,
        };
        if self.senders.iter().any(|s| {
            s.address == address && s.mac == mac && now_us.saturating_sub(s.at) < REFRESH_US
        }) {
            return None;
        }
        let oldest = self.senders.iter_mut().min_by_key(|s| s.at)?;
        *oldest = Sender { address, mac, at: now_us.max(1) };
        let mut lesson = [0u8; FRAME];
        let length = match ipv4 {
            true => self.arp_reply(&mut lesson, mac, address)?,
            false => self.neighbour_advert(&mut lesson, mac, address, frame)?,
        };
        Some((lesson, length))
    }

    /// Notes the sender of a DHCP server's message (UDP from port 67 to port 68).
    fn note_dhcp_server(&mut self, ethertype: u16, frame: &[u8]) {
        if EthernetProtocol::from(ethertype) != EthernetProtocol::Ipv4
            || frame.len() < ETHERNET + IPV4_HEADER
            || frame[IPV4_PROTOCOL] != UDP
            || frame[6] & 1 != 0
        {
            return;
        }
        let udp = ETHERNET + usize::from(frame[ETHERNET] & 0x0F) * 4;
        let Some(ports) = frame.get(udp..udp + 4) else { return };
        if ports == [0, DHCP_SERVER_PORT, 0, DHCP_CLIENT_PORT] {
            let (Ok(address), Ok(mac)) =
                (frame[IPV4_SOURCE..IPV4_SOURCE + 4].try_into(), frame[6..12].try_into())
            else {
                return;
            };
            self.dhcp_server = Some((address, mac));
        }
    }

    /// "`address` is at `mac`", as an ARP reply to the VM.
    fn arp_reply(&self, out: &mut [u8; FRAME], mac: [u8; 6], address: [u8; 16]) -> Option<usize> {
        let source = Ipv4Address::new(address[0], address[1], address[2], address[3]);
        if source.is_multicast() || source.is_broadcast() || source.is_unspecified() {
            return None;
        }
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(mac),
            source_protocol_addr: source,
            target_hardware_addr: EthernetAddress(self.mac),
            target_protocol_addr: Ipv4Address::from(self.ipv4?),
        };
        let length = ETHERNET + arp.buffer_len();
        let mut frame = self.ethernet(out, mac, EthernetProtocol::Arp, length)?;
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        Some(length)
    }

    /// "`address` is at `mac`", as the neighbour advertisement (with the override flag) that
    /// sender would send to the address it wrote to.
    fn neighbour_advert(
        &self,
        out: &mut [u8; FRAME],
        mac: [u8; 6],
        address: [u8; 16],
        frame: &[u8],
    ) -> Option<usize> {
        let source = Ipv6Address::from(address);
        if source.is_multicast() || source.is_unspecified() {
            return None;
        }
        let destination: [u8; 16] =
            frame[IPV6_DESTINATION..IPV6_DESTINATION + 16].try_into().ok()?;
        let destination = Ipv6Address::from(destination);
        let advert = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: source,
            lladdr: Some(EthernetAddress(mac).into()),
        });
        let ip = Ipv6Repr {
            src_addr: source,
            dst_addr: destination,
            next_header: IpProtocol::Icmpv6,
            payload_len: advert.buffer_len(),
            // Neighbour discovery is taken only from the link itself (RFC 4861, 7.1.2).
            hop_limit: 255,
        };
        let length = ETHERNET + IPV6_HEADER + advert.buffer_len();
        let mut frame = self.ethernet(out, mac, EthernetProtocol::Ipv6, length)?;
        let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet);
        advert.emit(
            &source,
            &destination,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &ChecksumCapabilities::default(),
        );
        Some(length)
    }

    /// The Ethernet header of a lesson from `mac` to the VM, `length` bytes in all.
    fn ethernet<'a>(
        &self,
        out: &'a mut [u8; FRAME],
        mac: [u8; 6],
        ethertype: EthernetProtocol,
        length: usize,
    ) -> Option<EthernetFrame<&'a mut [u8]>> {
        let mut frame = EthernetFrame::new_unchecked(out.get_mut(..length)?);
        EthernetRepr {
            src_addr: EthernetAddress(mac),
            dst_addr: EthernetAddress(self.mac),
            ethertype,
        }
        .emit(&mut frame);
        Some(frame)
    }
}

/// Whether `frame` is ARP or neighbour discovery: one that may change the stack's cache.
fn updates_neighbours(ethertype: u16, frame: &[u8]) -> bool {
    match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Arp => true,
        EthernetProtocol::Ipv6 => {
            frame.get(IPV6_NEXT_HEADER) == Some(&ICMPV6)
                && frame.get(ETHERNET + IPV6_HEADER).is_some_and(|kind| NDISC.contains(kind))
        }
        _ => false,
    }
}
