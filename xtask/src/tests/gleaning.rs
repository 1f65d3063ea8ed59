//! The gleaner (`src/net/glean.rs`) on the host: what it makes of frames the VM receives. A
//! lesson is followed by the same frame again (the card's ring does not move on until the
//! stack takes the frame itself), so for any frame the second look must give no lesson, or the
//! VM would loop on it for good; and nothing may panic, whatever the frame.

#[path = "../../../src/net/glean.rs"]
mod glean;

use super::harness::Noise;
use glean::Gleaner;

const VM: [u8; 6] = [0x52, 0x54, 0, 0, 5, 1];
const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 9, 9];
const VM_V4: [u8; 4] = [192, 0, 2, 80];
const VM_V6: [u8; 16] = [0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xFF, 0xFE, 0, 5, 1];

fn gleaner() -> Gleaner {
    let mut gleaner = Gleaner::new(VM);
    gleaner.ipv4 = Some(VM_V4);
    gleaner.ipv6[0] = Some(VM_V6);
    gleaner
}

/// An Ethernet frame from the peer to the VM: `ethertype`, then `payload`.
fn frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = VM.to_vec();
    frame.extend_from_slice(&PEER);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header (no options) from `source` to the VM, then 8 bytes.
fn ipv4_from(source: [u8; 4]) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
    packet.extend_from_slice(&source);
    packet.extend_from_slice(&VM_V4);
    packet.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
    packet
}

/// An IPv6 header from `source` to the VM with `next` and the first payload byte `kind`.
fn ipv6_from(source: [u8; 16], next: u8, kind: u8) -> Vec<u8> {
    let mut packet = vec![0x60, 0, 0, 0, 0, 8, next, 255];
    packet.extend_from_slice(&source);
    packet.extend_from_slice(&VM_V6);
    packet.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
    packet
}

#[test]
fn a_new_sender_is_taught_once_then_its_frames_pass() {
    let mut gleaner = gleaner();
    let echo = frame(0x0800, &ipv4_from([192, 0, 2, 1]));
    let (lesson, length) = gleaner.lesson(&echo, 1).expect("a lesson for a new sender");
    // An ARP reply from the peer, to the VM: "192.0.2.1 is at PEER".
    assert_eq!(&lesson[..6], &VM);
    assert_eq!(&lesson[6..12], &PEER);
    assert_eq!(&lesson[12..14], &[0x08, 0x06]);
    assert_eq!(length, 42);
    assert_eq!(&lesson[22..28], &PEER);
    assert_eq!(&lesson[28..32], &[192, 0, 2, 1]);
    assert!(gleaner.lesson(&echo, 2).is_none(), "taught twice");
    // An ARP frame: every sender is taught again, from the next frame on.
    assert!(gleaner.lesson(&frame(0x0806, &[0; 28]), 3).is_none());
    assert!(gleaner.lesson(&echo, 4).is_some(), "not taught again after ARP");
    // Neighbour discovery (a solicitation) is no frame to teach from, and forgets too.
    let source = [0xFE, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xFF, 0xFE, 0, 9, 9];
    let solicitation = frame(0x86DD, &ipv6_from(source, 58, 135));
    assert!(gleaner.lesson(&solicitation, 5).is_none());
    assert!(gleaner.lesson(&solicitation, 6).is_none());
    let echo6 = frame(0x86DD, &ipv6_from(source, 58, 128));
    let (lesson, _) = gleaner.lesson(&echo6, 7).expect("a lesson for the IPv6 sender");
    assert_eq!(&lesson[12..14], &[0x86, 0xDD]);
    assert!(gleaner.lesson(&echo6, 8).is_none());
    // Not for the VM, or from a multicast MAC: nothing.
    let mut other = echo.clone();
    other[0] = 0xFF;
    assert!(gleaner.lesson(&other, 9).is_none());
}

/// 200,000 generated frames, each looked at twice as the stack does after a lesson: never a
/// second lesson, never a panic. Half of them start as frames the gleaner would teach from.
#[test]
fn no_frame_gives_a_lesson_twice_in_a_row() {
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut gleaner = gleaner();
    for round in 0..200_000u64 {
        let mut bytes = match noise.below(4) {
            0 => frame(0x0800, &ipv4_from([192, 0, 2, noise.below(256) as u8])),
            1 => {
                let mut source = VM_V6;
                source[15] = noise.below(256) as u8;
                let kinds = [128, 129, 133, 134, 135, 136, 137, 1];
                frame(
                    0x86DD,
                    &ipv6_from(source, [58, 6, 17][noise.below(3)], kinds[noise.below(8)]),
                )
            }
            2 => frame([0x0800, 0x86DD, 0x0806][noise.below(3)], &[]),
            _ => (0..noise.below(120)).map(|_| noise.below(256) as u8).collect(),
        };
        // Cut short, or a byte changed, sometimes.
        if noise.below(4) == 0 && !bytes.is_empty() {
            bytes.truncate(noise.below(bytes.len()));
        }
        if noise.below(4) == 0 && !bytes.is_empty() {
            let at = noise.below(bytes.len());
            bytes[at] = noise.below(256) as u8;
        }
        let now = round * 1_000;
        if gleaner.lesson(&bytes, now).is_some() {
            assert!(
                gleaner.lesson(&bytes, now).is_none(),
                "round {round}: a second lesson for {bytes:02x?}"
            );
        }
    }
}

/// A DHCP server's message (UDP from 67 to 68) from `source`, with an IPv4 header of
/// `header_words` words, to the VM.
fn dhcp_from(source: [u8; 6], from_port: u8, to_port: u8, header_words: u8) -> Vec<u8> {
    let mut frame = VM.to_vec();
    frame.extend_from_slice(&source);
    frame.extend_from_slice(&[8, 0, 0x40 | header_words, 0, 1, 0x2C, 0, 0, 0, 0, 64, 17, 0, 0]);
    frame.extend_from_slice(&[192, 0, 2, 1]);
    frame.extend_from_slice(&VM_V4);
    frame.resize(frame.len() + (usize::from(header_words) - 5) * 4, 0);
    frame.extend_from_slice(&[0, from_port, 0, to_port, 1, 0x18, 0, 0]);
    frame.resize(frame.len() + 272, 0);
    frame
}

/// The release goes where the server's messages came from: the gleaner keeps the address and
/// MAC of the last one (past IPv4 options too), and not of a client's message, of a multicast
/// source, or of a frame cut short.
#[test]
fn the_dhcp_servers_mac_is_kept_from_its_last_message() {
    let mut gleaner = Gleaner::new(VM);
    let server = [0x52, 0x54, 0, 0, 7, 7];
    for frame in [
        dhcp_from(server, 68, 67, 5),
        dhcp_from([0x53, 0x54, 0, 0, 7, 7], 67, 68, 5),
        dhcp_from(server, 67, 68, 5)[..14 + 20 + 2].to_vec(),
    ] {
        gleaner.lesson(&frame, 0);
        assert_eq!(gleaner.dhcp_server, None, "{frame:02x?}");
    }
    gleaner.lesson(&dhcp_from(server, 67, 68, 5), 0);
    assert_eq!(gleaner.dhcp_server, Some(([192, 0, 2, 1], server)));
    let relay = [0x52, 0x54, 0, 0, 8, 8];
    gleaner.lesson(&dhcp_from(relay, 67, 68, 7), 0);
    assert_eq!(gleaner.dhcp_server, Some(([192, 0, 2, 1], relay)));
}
