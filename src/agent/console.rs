//! The agent's channel: a virtio-console device with several ports (Virtual I/O Device 1.2,
//! 5.3, VIRTIO_CONSOLE_F_MULTIPORT), on the PCI transport (`nic::virtio_pci`). The control
//! queues carry the port handshake: the driver says DEVICE_READY, the device adds each port
//! (DEVICE_ADD), the driver answers PORT_READY, the device names it (PORT_NAME); the port named
//! `org.qemu.guest_agent.0` is opened (PORT_OPEN, which QEMU reports as VSERPORT_CHANGE) and its
//! two queues carry the agent's bytes. Received bytes and the control queue raise MSI-X entry 0
//! (so does a finished transmission, for a reply that waited): an idle open port costs nothing.

use core::cell::{Cell, UnsafeCell};

use super::protocol::{Agent, Facts, REPLY, Reply, Shutdown};
use crate::nic::dma;
use crate::nic::virtio::{self, F_VERSION_1, Rings, Transport};
use crate::nic::virtio_pci::{self, Pci};
use crate::nic::virtqueue::{self, Virtqueue};
use crate::pci;

/// PCI device IDs: virtio-console, transitional and modern.
const TRANSITIONAL: u16 = 0x1003;
const MODERN: u16 = 0x1043;
/// VIRTIO_CONSOLE_F_MULTIPORT (5.3.3).
const F_MULTIPORT: u64 = 1 << 1;
/// The control queues (5.3.2): receive, transmit.
const CONTROL_RX: u16 = 2;
const CONTROL_TX: u16 = 3;
/// Ports 1 to this one get queues (port n: receive 2n + 2, transmit 2n + 3). QEMU numbers a
/// `virtserialport` from 1; libvirt and Proxmox give the agent's channel a low number.
const PORTS: usize = 4;
/// `virtio_console_control` events (5.3.6.2).
const DEVICE_READY: u16 = 0;
const DEVICE_ADD: u16 = 1;
const PORT_READY: u16 = 3;
const PORT_OPEN: u16 = 6;
const PORT_NAME: u16 = 7;
/// A control message's header: id (le32), event (le16), value (le16); PORT_NAME's name follows.
const HEADER: usize = 8;
/// The port the agent answers on.
const NAME: &[u8] = b"org.qemu.guest_agent.0";
/// Bytes of one receive buffer, and of one control message.
const RECEIVE: usize = 512;
const CONTROL: usize = 64;
/// The vector the console's MSI-X message raises (its handler only ends it).
pub const VECTOR: u8 = 0xE1;

const QUEUES: usize = 2 + 2 * PORTS;
/// Descriptors per queue: QEMU's virtio-serial offers 32 on its control queues (128 on the
/// ports'); the net card's 64 would not be accepted.
const SIZE: u16 = 32;

#[repr(C, align(4096))]
struct Area {
    rings: [[u8; dma::RING]; QUEUES],
    control_rx: [[u8; CONTROL]; SIZE as usize],
    control_tx: [[u8; HEADER]; SIZE as usize],
    rx: [[u8; RECEIVE]; SIZE as usize],
    tx: [[u8; REPLY]; SIZE as usize],
}

/// Shared with the device: reached only through raw pointers.
struct Shared(UnsafeCell<Area>);
// SAFETY: one CPU runs the VM, and interrupt handlers never touch this memory.
unsafe impl Sync for Shared {}

static AREA: Shared = Shared(UnsafeCell::new(Area {
    rings: [[0; dma::RING]; QUEUES],
    control_rx: [[0; CONTROL]; SIZE as usize],
    control_tx: [[0; HEADER]; SIZE as usize],
    rx: [[0; RECEIVE]; SIZE as usize],
    tx: [[0; REPLY]; SIZE as usize],
}));

fn area() -> *mut Area {
    AREA.0.get()
}

fn ring(queue: usize) -> *mut u8 {
    // SAFETY: a field of the static area, no reference made; the index is kept in range.
    unsafe { (&raw mut (*area()).rings[queue % QUEUES]).cast() }
}

fn control_rx(index: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe { (&raw mut (*area()).control_rx[index % SIZE as usize]).cast() }
}

fn control_tx(index: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe { (&raw mut (*area()).control_tx[index % SIZE as usize]).cast() }
}

fn rx(index: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe { (&raw mut (*area()).rx[index % SIZE as usize]).cast() }
}

fn tx(index: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe { (&raw mut (*area()).tx[index % SIZE as usize]).cast() }
}

fn rings(queue: &Virtqueue) -> Rings {
    let (descriptors, driver, device) = queue.addresses();
    Rings { descriptors, driver, device }
}

/// A transmit queue and the next descriptor to fill.
struct Sender {
    queue: Virtqueue,
    next: Cell<u16>,
}

impl Sender {
    /// A free buffer, if the device has given one back.
    fn free(&self, buffer: fn(usize) -> *mut u8) -> Option<*mut u8> {
        while self.queue.peek_used().is_some() {
            self.queue.take_used();
        }
        (self.queue.in_flight() < SIZE).then(|| buffer(self.next.get().into()))
    }

    /// Sends `length` bytes of the buffer [`free`](Self::free) gave.
    fn send(&self, transport: &Pci, number: u16, length: usize) {
        let index = self.next.get();
        self.queue.set_length(index, length as u32);
        self.queue.offer(index);
        self.next.set((index + 1) % SIZE);
        transport.notify(number);
    }
}

/// The console, running; the agent's port once the device has named it.
pub struct Console {
    transport: Pci,
    control_in: Virtqueue,
    control_out: Sender,
    ports_in: [Virtqueue; PORTS],
    ports_out: [Sender; PORTS],
    /// The agent's port (1 to [`PORTS`]).
    port: Option<usize>,
    /// How much of the received buffer at the head of the port's queue has been read.
    read: usize,
}

impl Console {
    /// Finds the first virtio-console PCI lists and starts it, its interrupt sent to `vector`
    /// at the local APIC `apic_id`; `None` without one (or without MULTIPORT, MSI-X, virtio 1.x).
    #[inline(never)]
    pub fn start(apic_id: u8, map: impl Fn(u64) -> bool) -> Option<Console> {
        let function = pci::find(|vendor, device| {
            vendor == virtio_pci::VENDOR && (device == TRANSITIONAL || device == MODERN)
        })?;
        let transport = Pci::at(function, &map)?;
        if !transport.enable_msix(apic_id, VECTOR, &map) {
            return None;
        }
        virtio::negotiate(&transport, F_MULTIPORT, F_VERSION_1 | F_MULTIPORT)?;
        let control_in =
            Virtqueue::new(ring(0), control_rx, CONTROL as u32, virtqueue::WRITE, SIZE);
        let control_out = Virtqueue::new(ring(1), control_tx, 0, 0, SIZE);
        let ports_in = core::array::from_fn(|port| {
            Virtqueue::new(ring(2 + 2 * port), rx, RECEIVE as u32, virtqueue::WRITE, SIZE)
        });
        let ports_out = core::array::from_fn(|port| Sender {
            queue: Virtqueue::new(ring(3 + 2 * port), tx, 0, 0, SIZE),
            next: Cell::new(0),
        });
        let size = SIZE;
        if !transport.set_up_queue(CONTROL_RX, size, rings(&control_in), true)
            || !transport.set_up_queue(CONTROL_TX, size, rings(&control_out), false)
        {
            return None;
        }
        for port in 0..PORTS {
            // A device with fewer ports offers fewer queues: the ones it has are enough.
            let queue = 4 + 2 * port as u16;
            if !transport.set_up_queue(queue, size, rings(&ports_in[port]), true)
                || !transport.set_up_queue(queue + 1, size, rings(&ports_out[port].queue), true)
            {
                break;
            }
        }
        virtio::driver_ok(&transport);
        let console = Console {
            transport,
            control_in,
            control_out: Sender { queue: control_out, next: Cell::new(0) },
            ports_in,
            ports_out,
            port: None,
            read: 0,
        };
        for index in 0..SIZE {
            console.control_in.offer(index);
        }
        console.transport.notify(CONTROL_RX);
        console.control(0, DEVICE_READY, 1);
        Some(console)
    }

    /// Sends a control message (dropped if the device holds every buffer: it never does for
    /// long, and the handshake's messages are few).
    #[inline(never)]
    fn control(&self, id: u32, event: u16, value: u16) {
        let Some(buffer) = self.control_out.free(control_tx) else { return };
        let mut message = [0u8; HEADER];
        message[..4].copy_from_slice(&id.to_le_bytes());
        message[4..6].copy_from_slice(&event.to_le_bytes());
        message[6..].copy_from_slice(&value.to_le_bytes());
        // SAFETY: a free transmit buffer of HEADER bytes.
        unsafe { core::ptr::copy_nonoverlapping(message.as_ptr(), buffer, HEADER) };
        self.control_out.send(&self.transport, CONTROL_TX, HEADER);
    }

    /// The device's control messages: ports added, named, opened by the host.
    #[inline(never)]
    fn handshake(&mut self, agent: &mut Agent) {
        let mut any = false;
        while let Some((index, length)) = self.control_in.peek_used() {
            let length = (length as usize).min(CONTROL);
            // SAFETY: a buffer the device has written and handed over.
            let message = unsafe { core::slice::from_raw_parts(control_rx(index.into()), length) };
            if length >= HEADER {
                let id = u32::from_le_bytes([message[0], message[1], message[2], message[3]]);
                let event = u16::from_le_bytes([message[4], message[5]]);
                let value = u16::from_le_bytes([message[6], message[7]]);
                let port = id as usize;
                // QEMU sends the name with its terminating NUL.
                let name = &message[HEADER..];
                let name = name.strip_suffix(&[0]).unwrap_or(name);
                match event {
                    DEVICE_ADD => self.control(id, PORT_READY, 1),
                    PORT_NAME if name == NAME && (1..=PORTS).contains(&port) => {
                        if self.port.is_none() {
                            self.port = Some(port);
                            let queue = &self.ports_in[port - 1];
                            for index in 0..SIZE {
                                queue.offer(index);
                            }
                            self.transport.notify(2 + 2 * port as u16);
                        }
                        self.control(id, PORT_OPEN, 1);
                    }
                    // A client connected: it starts afresh.
                    PORT_OPEN if Some(port) == self.port && value == 1 => agent.reset(),
                    _ => {}
                }
            }
            self.control_in.take_used();
            self.control_in.offer(index);
            any = true;
        }
        if any {
            self.transport.notify(CONTROL_RX);
        }
    }

    /// The console's work after a wake-up: the handshake, then the agent's bytes, answered
    /// while there is room to send (the rest waits in the device until replies drain).
    #[inline(never)]
    pub fn poll(&mut self, agent: &mut Agent, facts: &Facts) -> Option<Shutdown> {
        self.handshake(agent);
        let port = self.port?;
        let (input, output) = (&self.ports_in[port - 1], &self.ports_out[port - 1]);
        let queue = 2 + 2 * port as u16;
        while let Some((index, length)) = input.peek_used() {
            let Some(buffer) = output.free(tx) else { break };
            let length = (length as usize).min(RECEIVE);
            // SAFETY: a buffer the device has written and handed over.
            let bytes = unsafe { core::slice::from_raw_parts(rx(index.into()), length) };
            let mut reply = Reply::new();
            let (taken, shutdown) = agent.read(&bytes[self.read.min(length)..], facts, &mut reply);
            self.read += taken;
            let reply = reply.as_bytes();
            if !reply.is_empty() {
                // SAFETY: a free transmit buffer of REPLY bytes.
                unsafe { core::ptr::copy_nonoverlapping(reply.as_ptr(), buffer, reply.len()) };
                output.send(&self.transport, queue + 1, reply.len());
            }
            if self.read >= length {
                self.read = 0;
                input.take_used();
                input.offer(index);
                self.transport.notify(queue);
            }
            if shutdown.is_some() {
                return shutdown;
            }
        }
        None
    }
}
