//! Virtio devices over any transport (Virtual I/O Device 1.2): the [`Transport`] interface
//! each bus gives ([`virtio_pci`](super::virtio_pci): PCI, modern interface), the device
//! initialisation every virtio driver follows (3.1.1), and virtio-net (5.1) on top: queue 0
//! receives, queue 1 transmits, the card's MAC comes from its configuration.
//!
//! Our own driver rather than the `virtio-drivers` crate: that one reaches PCI through memory
//! mapped configuration (ECAM) and a hardware-abstraction trait that allocates pages, where the
//! VM has port I/O configuration, no allocator, and needs one queue pair (some 200 lines).

use core::cell::Cell;

use super::dma;
use super::virtqueue::{self, Virtqueue};

/// Device status bits (2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
/// VIRTIO_F_VERSION_1 (6): the device follows virtio 1.x.
pub const F_VERSION_1: u64 = 1 << 32;
/// The most polls of the status register after a reset.
const MAX_RESET_POLLS: u32 = 100_000;

/// The physical addresses of one split virtqueue's three parts.
#[derive(Clone, Copy)]
pub struct Rings {
    pub descriptors: u64,
    pub driver: u64,
    pub device: u64,
}

/// What a bus gives a virtio device's driver: the status register, feature bits, queues,
/// notifications, the interrupt and the device-specific configuration. Nothing here knows
/// which device it is.
pub trait Transport {
    /// The device status register (2.1).
    fn status(&self) -> u8;
    fn set_status(&self, status: u8);
    /// The 64 feature bits the device offers.
    fn device_features(&self) -> u64;
    /// The feature bits the driver accepts.
    fn set_driver_features(&self, features: u64);
    /// Whether the interface is virtio 1.x (a legacy one takes no FEATURES_OK, a 32-bit
    /// feature set and one page-aligned area per queue).
    fn modern(&self) -> bool;
    /// Sets queue `queue` up with `size` descriptors in `rings` and enables it; `interrupt`:
    /// used buffers raise the device's interrupt. `false` where the device offers fewer.
    fn set_up_queue(&self, queue: u16, size: u16, rings: Rings, interrupt: bool) -> bool;
    /// Tells the device queue `queue` has new buffers.
    fn notify(&self, queue: u16);
    /// Acknowledges the device's interrupt, where the bus asks it (a line, not a message).
    fn acknowledge(&self);
    /// Byte `offset` of the device-specific configuration.
    fn config8(&self, offset: usize) -> u8;
}

/// One MMIO register of width `T` at `address`.
pub fn read<T: Copy>(address: usize) -> T {
    // SAFETY: a register of a device the firmware or VMM placed and the entry mapped.
    unsafe { core::ptr::with_exposed_provenance::<T>(address).read_volatile() }
}

pub fn write<T: Copy>(address: usize, value: T) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::with_exposed_provenance_mut::<T>(address).write_volatile(value) }
}

/// Resets the device, acknowledges and drives it, and accepts `wanted` of the features it
/// offers (3.1.1): the features accepted, `None` where a modern device refuses them or does
/// not offer all of `needed`. Each status bit is written in a step of its own: Firecracker
/// checks each write moves one step.
pub fn negotiate(transport: &impl Transport, wanted: u64, needed: u64) -> Option<u64> {
    transport.set_status(0);
    let mut polls = 0;
    while transport.status() != 0 && polls < MAX_RESET_POLLS {
        polls += 1;
    }
    transport.set_status(ACKNOWLEDGE);
    transport.set_status(ACKNOWLEDGE | DRIVER);
    let offered = transport.device_features();
    if offered & needed != needed {
        return None;
    }
    let accepted = offered & (wanted | needed);
    transport.set_driver_features(accepted);
    if transport.modern() {
        transport.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if transport.status() & FEATURES_OK == 0 {
            return None;
        }
    }
    Some(accepted)
}

/// Tells the device the driver is ready (after its queues are set up).
pub fn driver_ok(transport: &impl Transport) {
    let features_ok = if transport.modern() { FEATURES_OK } else { 0 };
    transport.set_status(ACKNOWLEDGE | DRIVER | features_ok | DRIVER_OK);
}

/// Whether the device is still running (not reset by an error).
pub fn running(transport: &impl Transport) -> bool {
    transport.status() & DRIVER_OK != 0
}

/// virtio-net's device ID (5.1.1), on every transport; its PCI device IDs, transitional and
/// modern.
pub const NET_DEVICE: u32 = 1;
pub const NET_TRANSITIONAL: u16 = 0x1000;
pub const NET_MODERN: u16 = 0x1041;
/// Feature bits: the device has a MAC address; it merges receive buffers (5.1.3). The second
/// is taken for its header, never for merging: with it a legacy device's header is 12 bytes,
/// as a modern one's always is, and a frame (at most 1,514 bytes) fits in one buffer.
const NET_F_MAC: u64 = 1 << 5;
const NET_F_MRG_RXBUF: u64 = 1 << 15;

/// `virtio_net_hdr` with VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF (5.1.6): 12 bytes
/// before every frame, all zero for a plain frame.
pub const HEADER: usize = 12;
/// Frames above this are not sent.
const MAX_FRAME: usize = 1514;

const RECEIVE: u16 = 0;
const TRANSMIT: u16 = 1;

/// A virtio-net card on transport `T`, set up and running.
pub struct VirtioNet<T: Transport> {
    transport: T,
    rx: Virtqueue,
    tx: Virtqueue,
    /// The next transmit descriptor to fill.
    tx_next: Cell<u16>,
}

fn rings(queue: &Virtqueue) -> Rings {
    let (descriptors, driver, device) = queue.addresses();
    Rings { descriptors, driver, device }
}

impl<T: Transport> VirtioNet<T> {
    /// Resets and starts the card on `transport` (its interrupt already pointed where it
    /// goes), its receive queue raising the interrupt. `None` where it lacks what the VM needs
    /// (virtio 1.x, or a legacy device's mergeable buffers; enough descriptors).
    pub fn start(transport: T) -> Option<VirtioNet<T>> {
        let needed = if transport.modern() { F_VERSION_1 } else { NET_F_MRG_RXBUF };
        negotiate(&transport, NET_F_MAC | NET_F_MRG_RXBUF, needed)?;
        let rx = Virtqueue::new(
            dma::rx_ring(),
            dma::rx_buffer,
            dma::BUFFER as u32,
            virtqueue::WRITE,
            virtqueue::SIZE,
        );
        let tx = Virtqueue::new(dma::tx_ring(), dma::tx_buffer, 0, 0, virtqueue::SIZE);
        for (queue, ring, interrupt) in [(RECEIVE, &rx, true), (TRANSMIT, &tx, false)] {
            if !transport.set_up_queue(queue, virtqueue::SIZE, rings(ring), interrupt) {
                return None;
            }
        }
        driver_ok(&transport);

        let card = VirtioNet { transport, rx, tx, tx_next: Cell::new(0) };
        for index in 0..virtqueue::SIZE {
            card.rx.offer(index);
        }
        card.transport.notify(RECEIVE);
        Some(card)
    }

    /// The card's MAC address (device configuration bytes 0-5).
    pub fn mac(&self) -> [u8; 6] {
        core::array::from_fn(|i| self.transport.config8(i))
    }

    /// Whether the card is still running (not reset by an error).
    pub fn running(&self) -> bool {
        running(&self.transport)
    }

    /// Acknowledges the card's interrupt where its transport asks it.
    pub fn acknowledge(&self) {
        self.transport.acknowledge();
    }

    /// The next received frame (after its header) and its length.
    pub fn received(&self) -> Option<(*mut u8, usize)> {
        loop {
            let (index, length) = self.rx.peek_used()?;
            let length = length as usize;
            if (HEADER..=dma::BUFFER).contains(&length) {
                return Some((dma::rx_buffer(index.into()).wrapping_add(HEADER), length - HEADER));
            }
            self.recycle();
        }
    }

    /// Gives the buffer of the frame [`received`](Self::received) returned back to the card.
    pub fn recycle(&self) {
        if let Some((index, _)) = self.rx.peek_used() {
            self.rx.take_used();
            self.rx.offer(index);
            self.transport.notify(RECEIVE);
        }
    }

    /// A free transmit buffer (where the frame goes, after the header), if there is one.
    pub fn transmit_buffer(&self) -> Option<*mut u8> {
        while self.tx.peek_used().is_some() {
            self.tx.take_used();
        }
        (self.tx.in_flight() < virtqueue::SIZE)
            .then(|| dma::tx_buffer(self.tx_next.get().into()).wrapping_add(HEADER))
    }

    /// Whether the card has returned every frame it was given.
    pub fn sent_all(&self) -> bool {
        self.transmit_buffer();
        self.tx.in_flight() == 0
    }

    /// Sends the first `length` bytes of the buffer [`transmit_buffer`](Self::transmit_buffer)
    /// returned.
    pub fn send(&self, length: usize) {
        if length > MAX_FRAME {
            return;
        }
        let index = self.tx_next.get();
        // SAFETY: the header in front of the frame, in a buffer the card does not own now.
        unsafe { dma::bytes(dma::tx_buffer(index.into()), HEADER).fill(0) };
        self.tx.set_length(index, (HEADER + length) as u32);
        self.tx.offer(index);
        self.tx_next.set((index + 1) % virtqueue::SIZE);
        self.transport.notify(TRANSMIT);
    }
}
