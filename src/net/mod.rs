//! The net family's network: the first card PCI lists (`nic`), smoltcp on top of it (no heap:
//! every buffer below is a static), and what the VM does on the wire:
//!
//! - DHCPv4: a lease for the card's MAC, with a host name derived from it (`vm512-` and the
//!   MAC's digits) and its client identifier; renewal at T1, rebinding at T2 (smoltcp); a
//!   DHCPRELEASE when the VM powers off gracefully, so that a farm gives its leases back.
//! - Once leased, the line `<message> <address>` on COM1, after the message line.
//! - ARP, ICMP echo (v4 and v6), IPv6 link-local and SLAAC addresses with neighbour discovery.
//! - TCP port 80: `GET /` answers 200 with the message, the MAC and the addresses (`http`).
//!
//! Nothing is periodic: after each wake-up the stack is polled and the local APIC's one-shot
//! timer is armed for its next deadline only (`clock`).

pub mod device;
pub mod glean;
pub mod http;
pub mod text;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address,
    UdpPacket, UdpRepr,
};

use crate::clock::Clock;
use crate::core64::{Line, Machine};
use crate::nic::{self, Model, Nic, Signal};
use crate::{message, serial};
use device::Port;
use text::Text;

/// TCP sockets serving port 80: that many connections at once; more are refused (reset).
const WEB: usize = 4;
const HTTP_PORT: u16 = 80;
/// Each connection's receive and send buffer.
const WEB_BUFFER: usize = 1024;
/// A connection still open this long after it began is cut (a client that never sends its
/// request, or never reads the answer, must not hold a socket).
const WEB_LIFETIME_US: u64 = 10_000_000;
/// A connection whose handshake is not done this long after its SYN is cut: a flood of SYNs
/// from forged peers, who never answer the SYN-ACK, would otherwise hold every socket for
/// good (smoltcp retransmits the SYN-ACK without end). Enough for any real client's ACK.
const HANDSHAKE_LIFETIME_US: u64 = 2_000_000;
/// The most frames taken in one wake-up (a flood must not keep COM1 and the power button
/// waiting): the rest wait for the next turn, which comes at once.
const FRAMES_PER_TURN: usize = 32;
/// DHCP's ports.
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
/// Ethernet's and UDP's headers.
const ETHERNET_HEADER: usize = 14;
const UDP_HEADER: usize = 8;
/// How long the release may take to leave.
const RELEASE_WAIT_US: u64 = 300_000;
/// DHCPDISCOVER's retransmissions: every 2 s at first, the wait doubling up to 32 s while no
/// server answers (RFC 2131, 4.1, asks for a randomised exponential backoff; a first DISCOVER
/// lost while the port joins its bridge should not cost the 10 s of smoltcp's default).
const FIRST_DISCOVER_WAIT_US: u64 = 2_000_000;
const LAST_DISCOVER_WAIT_US: u64 = 32_000_000;
/// The DHCP host name option (RFC 2132, 3.14).
const HOST_NAME_OPTION: u8 = 12;
/// The most IPv6 addresses shown (link-local and SLAAC).
const MAX_SHOWN: usize = 3;

/// The sockets: DHCP and the web. (The release is a frame of its own: no UDP socket, whose
/// code would cost some 3 KB.)
const SOCKETS: usize = 1 + WEB;

/// Static storage for the stack, handed out once by [`Network::start`]. All zeros, so that it
/// costs the image no bytes (the socket slots and the DHCP option are set up at start).
struct Storage {
    web_rx: [[u8; WEB_BUFFER]; WEB],
    web_tx: [[u8; WEB_BUFFER]; WEB],
    host_name: Text<18>,
}

static mut STORAGE: Storage = Storage {
    web_rx: [[0; WEB_BUFFER]; WEB],
    web_tx: [[0; WEB_BUFFER]; WEB],
    host_name: Text::new(),
};

/// The socket slots and DHCP's extra option, set at start. The slots are left uninitialised
/// (zeros in `.bss`) and emptied one by one at start: an empty slot is not all zeros, and a
/// static of empty ones would cost the image its 2.8 KB.
static mut SOCKET_SLOTS: core::mem::MaybeUninit<[SocketStorage<'static>; SOCKETS]> =
    core::mem::MaybeUninit::uninit();
static mut OPTIONS: [smoltcp::wire::DhcpOption<'static>; 1] =
    [smoltcp::wire::DhcpOption { kind: HOST_NAME_OPTION, data: &[] }];

/// The socket slots, each emptied in place (one store each, not a copy of a 2.8 KB template).
///
/// # Safety
/// Called once, by [`Network::start`]; the slots are the stack's from then on.
unsafe fn empty_slots() -> &'static mut [SocketStorage<'static>; SOCKETS] {
    let slots = (&raw mut SOCKET_SLOTS).cast::<SocketStorage<'static>>();
    for index in 0..SOCKETS {
        // SAFETY: in the static, which nothing else reaches; each slot written before use.
        unsafe { slots.add(index).write(SocketStorage::EMPTY) };
    }
    // SAFETY: every slot is initialised now.
    unsafe { &mut *(&raw mut SOCKET_SLOTS).cast() }
}

/// The address DHCP gave, and who gave it.
#[derive(Clone, Copy)]
struct Lease {
    address: Ipv4Address,
    server: Ipv4Address,
}

/// The network, running.
pub struct Network {
    nic: Nic,
    signal: Signal,
    clock: Clock,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: SocketHandle,
    web: [SocketHandle; WEB],
    /// When each web connection began (`None`: listening).
    web_since: [Option<u64>; WEB],
    /// Whether each connection has had its answer.
    web_answered: [bool; WEB],
    lease: Option<Lease>,
    /// The senders taught to the stack, and the VM's addresses it needs for that.
    gleaner: glean::Gleaner,
    /// While no lease: the DISCOVER interval now, and when it next doubles.
    discover_wait_us: u64,
    backoff_at: u64,
    mac: [u8; 6],
    model: Model,
}

impl Network {
    /// Finds and starts the card, measures the clock and sets the stack up; `None` without a
    /// card the VM drives. Called once.
    pub fn start(apic_id: u8, machine: &Machine) -> Option<Network> {
        let (nic, model, signal) = nic::find(apic_id, machine.map, machine.cmdline, machine.dsdt)?;
        let clock = Clock::calibrate();
        let mac = nic.mac();
        let mut config = Config::new(EthernetAddress(mac).into());
        config.random_seed = clock.seed();
        config.slaac = true;
        let now = Instant::from_micros(clock.now_us() as i64);
        let mut gleaner = glean::Gleaner::new(mac);
        let mut iface = Interface::new(config, &mut Port { nic: &nic, gleaner: &mut gleaner }, now);
        iface.update_ip_addrs(|addresses| {
            let link_local = Ipv6Address::from(text::link_local(mac));
            let _ = addresses.push(IpCidr::new(IpAddress::Ipv6(link_local), 64));
        });

        // SAFETY: called once (the core starts its service once); from here on the storage is
        // the stack's alone.
        let (Storage { web_rx, web_tx, host_name }, slots, options) =
            unsafe { (&mut *(&raw mut STORAGE), empty_slots(), &mut *(&raw mut OPTIONS)) };
        *host_name = text::host_name(mac);
        let host_name: &'static Text<18> = host_name;
        options[0].data = host_name.as_bytes();
        let options: &'static [smoltcp::wire::DhcpOption<'static>] = options;
        let mut sockets = SocketSet::new(&mut slots[..]);
        let mut dhcp = dhcpv4::Socket::new();
        dhcp.set_outgoing_options(options);
        let mut retry = dhcp.get_retry_config();
        retry.discover_timeout = smoltcp::time::Duration::from_micros(FIRST_DISCOVER_WAIT_US);
        dhcp.set_retry_config(retry);
        let dhcp = sockets.add(dhcp);
        let mut web = [dhcp; WEB];
        for (handle, (rx, tx)) in web.iter_mut().zip(web_rx.iter_mut().zip(web_tx.iter_mut())) {
            let rx = tcp::SocketBuffer::new(&mut rx[..]);
            let tx = tcp::SocketBuffer::new(&mut tx[..]);
            *handle = sockets.add(tcp::Socket::new(rx, tx));
        }
        Some(Network {
            nic,
            signal,
            clock,
            iface,
            sockets,
            dhcp,
            web,
            web_since: [None; WEB],
            web_answered: [false; WEB],
            lease: None,
            gleaner,
            discover_wait_us: FIRST_DISCOVER_WAIT_US,
            backoff_at: clock.now_us() + FIRST_DISCOVER_WAIT_US,
            mac,
            model,
        })
    }

    /// The card's line: its INTx's ISA IRQ, or its virtio-mmio GSI, where it signals that way.
    pub fn line(&self) -> Option<Line> {
        match self.signal {
            Signal::IsaIrq(irq) => Some(Line::Isa(irq)),
            Signal::Gsi(interrupt) => Some(Line::Gsi(interrupt)),
            _ => None,
        }
    }

    /// The clock the network measured.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The card's MAC and the VM's addresses, for the guest agent.
    pub fn describe(&self, facts: &mut crate::agent::protocol::Facts) {
        use crate::agent::protocol::Address;
        facts.mac = Some(self.mac);
        let mut addresses = self.iface.ip_addrs().iter().map(|cidr| match cidr {
            IpCidr::Ipv4(c) => Address::V4(c.address().octets(), c.prefix_len()),
            IpCidr::Ipv6(c) => Address::V6(c.address().octets(), c.prefix_len()),
        });
        facts.addresses = core::array::from_fn(|_| addresses.next());
    }

    pub fn model(&self) -> Model {
        self.model
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.clock.now_us() as i64)
    }

    /// One turn of work after a wake-up: frames in and out, DHCP, the web; then the alarm for
    /// the next deadline.
    pub fn poll(&mut self) {
        self.nic.acknowledge();
        let now = self.now();
        self.back_off(now.total_micros() as u64);
        self.turn(now);
        self.dhcp_events();
        self.serve_web(now);
        // What the answers queued goes out now, not at the next wake-up.
        let mut port = Port { nic: &self.nic, gleaner: &mut self.gleaner };
        self.iface.poll_egress(now, &mut port, &mut self.sockets);
        self.set_alarm(now);
    }

    /// Frames in (at most a turn's worth), the stack's timers, frames out.
    fn turn(&mut self, now: Instant) {
        self.iface.poll_maintenance(now);
        self.gleaner.ipv4 = self.lease.map(|lease| lease.address.octets());
        let mut ipv6 = self.iface.ip_addrs().iter().filter_map(|cidr| match cidr {
            IpCidr::Ipv6(cidr) => Some(cidr.address().octets()),
            _ => None,
        });
        self.gleaner.ipv6 = core::array::from_fn(|_| ipv6.next());
        let mut port = Port { nic: &self.nic, gleaner: &mut self.gleaner };
        for _ in 0..FRAMES_PER_TURN {
            use smoltcp::iface::PollIngressSingleResult::None as Idle;
            if matches!(self.iface.poll_ingress_single(now, &mut port, &mut self.sockets), Idle) {
                break;
            }
        }
        self.iface.poll_egress(now, &mut port, &mut self.sockets);
    }

    /// Arms the alarm for the stack's next deadline, the web's, or at once where frames wait.
    fn set_alarm(&mut self, now: Instant) {
        let mut wait = self.iface.poll_delay(now, &self.sockets).map(|d| d.total_micros());
        let now_us = now.total_micros() as u64;
        for (since, handle) in self.web_since.iter().zip(self.web) {
            let Some(since) = since else { continue };
            let state = self.sockets.get::<tcp::Socket>(handle).state();
            let left = (since + lifetime(state)).saturating_sub(now_us);
            wait = Some(wait.map_or(left, |wait| wait.min(left)));
        }
        if self.nic.received().is_some() {
            wait = Some(0);
        }
        self.clock.alarm_in(wait);
    }

    /// Without a lease, doubles the DISCOVER interval each time one has passed (up to its
    /// cap); with one, starts again from the first interval for the next time.
    fn back_off(&mut self, now_us: u64) {
        if self.lease.is_some() {
            // Should the lease go, the first interval runs from its last wake-up.
            self.backoff_at = now_us + FIRST_DISCOVER_WAIT_US;
            if self.discover_wait_us == FIRST_DISCOVER_WAIT_US {
                return;
            }
            self.discover_wait_us = FIRST_DISCOVER_WAIT_US;
        } else if now_us >= self.backoff_at && self.discover_wait_us < LAST_DISCOVER_WAIT_US {
            self.discover_wait_us *= 2;
            self.backoff_at = now_us + self.discover_wait_us;
        } else {
            return;
        }
        let socket = self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp);
        let mut retry = socket.get_retry_config();
        retry.discover_timeout = smoltcp::time::Duration::from_micros(self.discover_wait_us);
        socket.set_retry_config(retry);
    }

    /// Takes DHCP's news: a new lease sets the address and the default route and prints the
    /// line; a lost one removes them.
    fn dhcp_events(&mut self) {
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll() {
            None => return,
            Some(dhcpv4::Event::Configured(config)) => {
                Some((config.address, config.router, config.server.address))
            }
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        self.iface.update_ip_addrs(|addresses| addresses.retain(|a| !matches!(a, IpCidr::Ipv4(_))));
        self.iface.routes_mut().remove_default_ipv4_route();
        self.lease = None;
        let Some((address, router, server)) = event else { return };
        self.iface.update_ip_addrs(|addresses| {
            let _ = addresses.push(IpCidr::Ipv4(address));
        });
        if let Some(router) = router {
            let _ = self.iface.routes_mut().add_default_ipv4_route(router);
        }
        self.lease = Some(Lease { address: address.address(), server });
        self.announce();
    }

    /// `<message> <address>` on COM1, a line of its own.
    fn announce(&self) {
        let Some(lease) = self.lease else { return };
        let mut line = Text::<{ message::ROOM + 24 }>::default();
        message::for_each_byte(|byte| {
            if byte != b'\r' && byte != b'\n' {
                line.push(byte);
            }
        });
        line.push(b' ').ipv4(lease.address.octets()).text(b"\r\n");
        for &byte in line.as_bytes() {
            serial::write(byte);
        }
    }

    /// Serves port 80: listens again on closed sockets, answers complete requests, cuts
    /// connections that outlive their time.
    fn serve_web(&mut self, now: Instant) {
        let now_us = now.total_micros() as u64;
        for i in 0..WEB {
            let socket = self.sockets.get_mut::<tcp::Socket>(self.web[i]);
            match socket.state() {
                tcp::State::Closed => {
                    let _ = socket.listen(HTTP_PORT);
                    self.web_since[i] = None;
                    self.web_answered[i] = false;
                    continue;
                }
                tcp::State::Listen => continue,
                // Not connected yet: nothing to answer, unless it is too late.
                tcp::State::SynReceived | tcp::State::SynSent => {
                    let since = *self.web_since[i].get_or_insert(now_us);
                    if now_us.saturating_sub(since) >= HANDSHAKE_LIFETIME_US {
                        socket.abort();
                    }
                    continue;
                }
                // Our close is done: the port's socket is needed more than the wait is.
                tcp::State::TimeWait => {
                    socket.abort();
                    continue;
                }
                _ => {}
            }
            let since = *self.web_since[i].get_or_insert(now_us);
            if now_us.saturating_sub(since) >= WEB_LIFETIME_US {
                socket.abort();
                continue;
            }
            if self.web_answered[i]
                || !matches!(socket.state(), tcp::State::Established | tcp::State::CloseWait)
            {
                // Whatever else the client sends is read and dropped.
                let _ = socket.recv(|bytes| (bytes.len(), ()));
                continue;
            }
            let full = socket.recv_queue() >= socket.recv_capacity() || !socket.may_recv();
            let request = socket.peek(WEB_BUFFER).unwrap_or_default();
            let answer = http::answer(request, full);
            if answer == http::Answer::Incomplete {
                continue;
            }
            let mut body = Text::<{ message::ROOM + 160 }>::default();
            page(&mut body, self.mac, self.lease, self.iface.ip_addrs());
            let mut head = Text::<160>::default();
            http::head(answer, body.as_bytes().len(), &mut head);
            let socket = self.sockets.get_mut::<tcp::Socket>(self.web[i]);
            let _ = socket.recv(|bytes| (bytes.len(), ()));
            let _ = socket.send_slice(head.as_bytes());
            if answer == http::Answer::Page {
                let _ = socket.send_slice(body.as_bytes());
            }
            socket.close();
            self.web_answered[i] = true;
        }
    }

    /// Before the VM powers off: gives the lease back (DHCPRELEASE to the server that gave it,
    /// RFC 2131, 4.4.6) and waits, a bounded time, for it to leave.
    pub fn stop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let repr = DhcpRepr {
            message_type: DhcpMessageType::Release,
            transaction_id: self.clock.seed() as u32,
            secs: 0,
            client_hardware_address: EthernetAddress(self.mac),
            client_ip: lease.address,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: Some(EthernetAddress(self.mac)),
            server_identifier: Some(lease.server),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let dhcp_length = repr.buffer_len();
        let ip = Ipv4Repr {
            src_addr: lease.address,
            dst_addr: lease.server,
            next_header: IpProtocol::Udp,
            payload_len: UDP_HEADER + dhcp_length,
            hop_limit: 64,
        };
        let length = ETHERNET_HEADER + ip.buffer_len() + ip.payload_len;
        // The server's MAC, where its last message came from it; else every MAC on the link
        // (after a forged DHCP message from another address, or for a relayed lease: a server
        // on the link takes it as sent to its address all the same).
        let destination = match self.gleaner.dhcp_server {
            Some((address, mac)) if address == lease.server.octets() => EthernetAddress(mac),
            _ => EthernetAddress::BROADCAST,
        };
        let start = self.clock.now_us();
        while !self.nic.can_send() {
            if self.clock.now_us() - start >= RELEASE_WAIT_US {
                return;
            }
            core::hint::spin_loop();
        }
        let mac = EthernetAddress(self.mac);
        self.nic.send(length, |frame| {
            let checksums = ChecksumCapabilities::default();
            let mut ethernet = EthernetFrame::new_unchecked(frame);
            EthernetRepr {
                src_addr: mac,
                dst_addr: destination,
                ethertype: EthernetProtocol::Ipv4,
            }
            .emit(&mut ethernet);
            let mut packet = Ipv4Packet::new_unchecked(ethernet.payload_mut());
            ip.emit(&mut packet, &checksums);
            let mut udp = UdpPacket::new_unchecked(packet.payload_mut());
            UdpRepr { src_port: DHCP_CLIENT_PORT, dst_port: DHCP_SERVER_PORT }.emit(
                &mut udp,
                &lease.address.into(),
                &lease.server.into(),
                dhcp_length,
                |payload| {
                    let _ = repr.emit(&mut DhcpPacket::new_unchecked(payload));
                },
                &checksums,
            );
        });
        while !self.nic.sent_all() && self.clock.now_us() - start < RELEASE_WAIT_US {
            core::hint::spin_loop();
        }
    }
}

/// How long a web connection may last in `state`, from its SYN.
fn lifetime(state: tcp::State) -> u64 {
    match state {
        tcp::State::SynReceived | tcp::State::SynSent => HANDSHAKE_LIFETIME_US,
        _ => WEB_LIFETIME_US,
    }
}

/// The web page: the message, then the MAC and every address, a line each.
fn page<const N: usize>(
    body: &mut Text<N>,
    mac: [u8; 6],
    lease: Option<Lease>,
    addresses: &[IpCidr],
) {
    message::for_each_byte(|byte| {
        if byte != b'\r' {
            body.push(byte);
        }
    });
    body.text(b"mac ").mac(mac, Some(b':')).push(b'\n');
    if let Some(lease) = lease {
        body.text(b"ipv4 ").ipv4(lease.address.octets()).push(b'\n');
    }
    for cidr in addresses.iter().take(MAX_SHOWN) {
        if let IpCidr::Ipv6(cidr) = cidr {
            body.text(b"ipv6 ").ipv6(cidr.address().octets()).push(b'\n');
        }
    }
}

/// The core's service in the net family: the network, where there is a card.
impl crate::core64::Service for Option<Network> {
    fn start(machine: &Machine) -> Self {
        Network::start(crate::lapic::id(), machine)
    }

    fn line(&self) -> Option<Line> {
        self.as_ref()?.line()
    }

    fn poll(&mut self) {
        if let Some(network) = self {
            network.poll();
        }
    }

    fn stop(&mut self) {
        if let Some(network) = self {
            network.stop();
        }
    }
}
