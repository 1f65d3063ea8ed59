//! virtio-net on PCI, through the modern (virtio 1.x) interface (Virtual I/O Device 1.2, 4.1
//! and 5.1): what both of QEMU's variants offer, modern-only (`disable-legacy=on`, as libvirt
//! and KubeVirt give on q35's PCIe slots: no I/O BAR) and transitional (pc's default, which
//! carries the modern capabilities too). Queue 0 receives, queue 1 transmits; the card's MAC
//! comes from its configuration; a received frame raises MSI-X vector 0.
//!
//! Our own driver rather than the `virtio-drivers` crate: that one reaches PCI through memory
//! mapped configuration (ECAM) and a hardware-abstraction trait that allocates pages, where the
//! VM has port I/O configuration, no allocator, and needs one queue pair (some 200 lines).

use core::cell::Cell;

use super::dma;
use super::virtqueue::{self, Virtqueue};
use crate::pci::{self, Function};

/// PCI IDs: Red Hat / Qumranet; the transitional and the modern virtio-net device IDs.
pub const VENDOR: u16 = 0x1AF4;
pub const TRANSITIONAL: u16 = 0x1000;
pub const MODERN: u16 = 0x1041;

/// `virtio_pci_cap` (4.1.4): type at +3, BAR at +4, offset at +8; the notify capability's
/// multiplier at +16.
const CAP_TYPE: u8 = 3;
const CAP_BAR: u8 = 4;
const CAP_OFFSET: u8 = 8;
const CAP_NOTIFY_MULTIPLIER: u8 = 16;
/// Capability types: common configuration, notifications, device configuration.
const COMMON_CFG: u8 = 1;
const NOTIFY_CFG: u8 = 2;
const DEVICE_CFG: u8 = 4;

/// `virtio_pci_common_cfg` (4.1.4.3) offsets.
const DEVICE_FEATURE_SELECT: usize = 0x00;
const DEVICE_FEATURE: usize = 0x04;
const DRIVER_FEATURE_SELECT: usize = 0x08;
const DRIVER_FEATURE: usize = 0x0C;
const MSIX_CONFIG: usize = 0x10;
const DEVICE_STATUS: usize = 0x14;
const QUEUE_SELECT: usize = 0x16;
const QUEUE_SIZE: usize = 0x18;
const QUEUE_MSIX_VECTOR: usize = 0x1A;
const QUEUE_ENABLE: usize = 0x1C;
const QUEUE_NOTIFY_OFF: usize = 0x1E;
const QUEUE_DESC: usize = 0x20;
const QUEUE_DRIVER: usize = 0x28;
const QUEUE_DEVICE: usize = 0x30;

/// Device status bits (2.1).
const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
/// Feature bits: the device has a MAC address (5.1.3); virtio 1.x (6).
const NET_F_MAC: u32 = 1 << 5;
const F_VERSION_1_HIGH: u32 = 1 << (32 - 32);
/// MSI-X: no vector.
const NO_VECTOR: u16 = 0xFFFF;
/// MSI-X capability: message control at +2 (bit 15 enable, bit 14 function mask), table
/// offset and BAR at +4; a table entry is 16 bytes (address, upper address, data, control).
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// The most polls of the status register after a reset.
const MAX_RESET_POLLS: u32 = 100_000;

/// `virtio_net_hdr` with VIRTIO_F_VERSION_1 (5.1.6): 12 bytes before every frame, all zero
/// for a plain frame.
pub const HEADER: usize = 12;
/// Frames above this are not sent.
const MAX_FRAME: usize = 1514;

const RECEIVE: u16 = 0;
const TRANSMIT: u16 = 1;

/// A card, set up and running.
pub struct VirtioNet {
    common: usize,
    device: usize,
    /// Where queue 0's and queue 1's notifications are written.
    notify: [usize; 2],
    rx: Virtqueue,
    tx: Virtqueue,
    /// The next transmit descriptor to fill.
    tx_next: Cell<u16>,
}

/// One MMIO register of width `T` at `address`.
fn read<T: Copy>(address: usize) -> T {
    // SAFETY: a register in a BAR the firmware placed and the entry mapped.
    unsafe { core::ptr::with_exposed_provenance::<T>(address).read_volatile() }
}

fn write<T: Copy>(address: usize, value: T) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::with_exposed_provenance_mut::<T>(address).write_volatile(value) }
}

/// The address a virtio capability at `cap` points at, if its BAR is mapped.
fn structure(function: Function, cap: u8, map: &impl Fn(u64) -> bool) -> Option<usize> {
    let bar = function.read8(cap + CAP_BAR);
    if bar > 5 {
        return None;
    }
    let address = function.memory_bar(bar)? + u64::from(function.read32(cap + CAP_OFFSET));
    map(address).then_some(address as usize)
}

impl VirtioNet {
    /// Resets and starts the card at `function`, its receive queue raising `vector` at the
    /// local APIC `apic_id`. `None` where it lacks what the VM needs (the modern interface,
    /// MSI-X, virtio 1.x), or a register cannot be mapped (`map`).
    pub fn start(
        function: Function,
        apic_id: u8,
        vector: u8,
        map: impl Fn(u64) -> bool,
    ) -> Option<VirtioNet> {
        let (mut common, mut device, mut notify) = (None, None, None);
        for (id, cap) in function.capabilities() {
            if id != pci::CAP_VENDOR {
                continue;
            }
            match function.read8(cap + CAP_TYPE) {
                COMMON_CFG if common.is_none() => common = structure(function, cap, &map),
                DEVICE_CFG if device.is_none() => device = structure(function, cap, &map),
                NOTIFY_CFG if notify.is_none() => {
                    let multiplier = function.read32(cap + CAP_NOTIFY_MULTIPLIER) as usize;
                    notify = structure(function, cap, &map).map(|at| (at, multiplier));
                }
                _ => {}
            }
        }
        let (common, device, (notify, multiplier)) = (common?, device?, notify?);
        let msix = function.capability(pci::CAP_MSIX)?;
        function.enable(false);

        // Reset, then acknowledge and drive it (3.1.1).
        write::<u8>(common + DEVICE_STATUS, 0);
        let mut polls = 0;
        while read::<u8>(common + DEVICE_STATUS) != 0 && polls < MAX_RESET_POLLS {
            polls += 1;
        }
        write::<u8>(common + DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
        write::<u32>(common + DEVICE_FEATURE_SELECT, 0);
        let offered_low = read::<u32>(common + DEVICE_FEATURE);
        write::<u32>(common + DEVICE_FEATURE_SELECT, 1);
        let offered_high = read::<u32>(common + DEVICE_FEATURE);
        if offered_high & F_VERSION_1_HIGH == 0 {
            return None;
        }
        write::<u32>(common + DRIVER_FEATURE_SELECT, 0);
        write::<u32>(common + DRIVER_FEATURE, offered_low & NET_F_MAC);
        write::<u32>(common + DRIVER_FEATURE_SELECT, 1);
        write::<u32>(common + DRIVER_FEATURE, F_VERSION_1_HIGH);
        write::<u8>(common + DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if read::<u8>(common + DEVICE_STATUS) & FEATURES_OK == 0 {
            return None;
        }

        // MSI-X table entry 0: this CPU's local APIC, `vector`; then MSI-X on (INTx off).
        let table = function.read32(msix + 4);
        let table_bar = (table & 0b111) as u8;
        let table_address = function.memory_bar(table_bar)? + u64::from(table & !0b111);
        if !map(table_address) {
            return None;
        }
        let entry = table_address as usize;
        write::<u32>(entry, pci::msi_address(apic_id));
        write::<u32>(entry + 4, 0);
        write::<u32>(entry + 8, u32::from(vector));
        write::<u32>(entry + 12, 0);
        let control = function.read16(msix + 2);
        function.write16(msix + 2, control & !MSIX_FUNCTION_MASK | MSIX_ENABLE);
        write::<u16>(common + MSIX_CONFIG, NO_VECTOR);

        let rx =
            Virtqueue::new(dma::rx_ring(), dma::rx_buffer, dma::BUFFER as u32, virtqueue::WRITE);
        let tx = Virtqueue::new(dma::tx_ring(), dma::tx_buffer, 0, 0);
        let mut notify_at = [0; 2];
        for (queue, ring, msix_vector) in [(RECEIVE, &rx, 0), (TRANSMIT, &tx, NO_VECTOR)] {
            write::<u16>(common + QUEUE_SELECT, queue);
            if read::<u16>(common + QUEUE_SIZE) < virtqueue::SIZE {
                return None;
            }
            write::<u16>(common + QUEUE_SIZE, virtqueue::SIZE);
            write::<u16>(common + QUEUE_MSIX_VECTOR, msix_vector);
            let (descriptors, driver, used) = ring.addresses();
            for (register, address) in
                [(QUEUE_DESC, descriptors), (QUEUE_DRIVER, driver), (QUEUE_DEVICE, used)]
            {
                write::<u32>(common + register, address as u32);
                write::<u32>(common + register + 4, (address >> 32) as u32);
            }
            let offset = usize::from(read::<u16>(common + QUEUE_NOTIFY_OFF));
            notify_at[usize::from(queue)] = notify + offset * multiplier;
            write::<u16>(common + QUEUE_ENABLE, 1);
        }
        write::<u8>(common + DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);

        let card = VirtioNet { common, device, notify: notify_at, rx, tx, tx_next: Cell::new(0) };
        for index in 0..virtqueue::SIZE {
            card.rx.offer(index);
        }
        card.kick(RECEIVE);
        Some(card)
    }

    fn kick(&self, queue: u16) {
        write::<u16>(self.notify[usize::from(queue)], queue);
    }

    /// The card's MAC address (device configuration bytes 0-5).
    pub fn mac(&self) -> [u8; 6] {
        core::array::from_fn(|i| read::<u8>(self.device + i))
    }

    /// Whether the card is still running (not reset by an error).
    pub fn running(&self) -> bool {
        read::<u8>(self.common + DEVICE_STATUS) & DRIVER_OK != 0
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
            self.kick(RECEIVE);
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
        self.kick(TRANSMIT);
    }
}
