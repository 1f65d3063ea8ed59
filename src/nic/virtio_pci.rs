//! The virtio PCI transport, modern interface (Virtual I/O Device 1.2, 4.1): the common,
//! notification and device configuration structures its vendor capabilities point at, and MSI-X
//! for interrupts. What both of QEMU's variants offer, modern-only (`disable-legacy=on`, as
//! libvirt and KubeVirt give on q35's PCIe slots: no I/O BAR) and transitional (pc's default,
//! which carries the modern capabilities too), and Cloud Hypervisor's devices. Device-agnostic:
//! any virtio device drives it through [`Transport`].

use super::virtio::{Rings, Transport, read, write};
use crate::pci::{self, Function};

/// PCI vendor ID of every virtio device: Red Hat / Qumranet.
pub const VENDOR: u16 = 0x1AF4;

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

/// MSI-X: no vector.
const NO_VECTOR: u16 = 0xFFFF;
/// MSI-X capability: message control at +2 (bit 15 enable, bit 14 function mask), table
/// offset and BAR at +4; a table entry is 16 bytes (address, upper address, data, control).
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// The most queues whose notification address is kept: the card's two, or the console's
/// control queues and four ports' (`src/agent/console.rs`).
const MAX_QUEUES: usize = 12;

/// A virtio device on PCI, its structures mapped.
pub struct Pci {
    function: Function,
    common: usize,
    device: usize,
    notify: usize,
    multiplier: usize,
    /// Where each queue's notifications are written (set by [`Transport::set_up_queue`]).
    notify_at: [core::cell::Cell<usize>; MAX_QUEUES],
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

impl Pci {
    /// The modern interface of the virtio device at `function`, its memory decoding on and
    /// INTx off; `None` without it, or where a structure cannot be mapped (`map`).
    pub fn at(function: Function, map: &impl Fn(u64) -> bool) -> Option<Pci> {
        let (mut common, mut device, mut notify) = (None, None, None);
        for (id, cap) in function.capabilities() {
            if id != pci::CAP_VENDOR {
                continue;
            }
            match function.read8(cap + CAP_TYPE) {
                COMMON_CFG if common.is_none() => common = structure(function, cap, map),
                DEVICE_CFG if device.is_none() => device = structure(function, cap, map),
                NOTIFY_CFG if notify.is_none() => {
                    let multiplier = function.read32(cap + CAP_NOTIFY_MULTIPLIER) as usize;
                    notify = structure(function, cap, map).map(|at| (at, multiplier));
                }
                _ => {}
            }
        }
        let (common, device, (notify, multiplier)) = (common?, device?, notify?);
        function.enable(false);
        Some(Pci { function, common, device, notify, multiplier, notify_at: Default::default() })
    }

    /// Points MSI-X table entry 0 at `vector` of the local APIC `apic_id` and turns MSI-X on;
    /// configuration changes raise nothing. `false` without MSI-X or where its table cannot be
    /// mapped (`map`). Queues set up with an interrupt raise entry 0.
    pub fn enable_msix(&self, apic_id: u8, vector: u8, map: &impl Fn(u64) -> bool) -> bool {
        let function = self.function;
        let Some(msix) = function.capability(pci::CAP_MSIX) else { return false };
        let table = function.read32(msix + 4);
        let Some(bar) = function.memory_bar((table & 0b111) as u8) else { return false };
        let table_address = bar + u64::from(table & !0b111);
        if !map(table_address) {
            return false;
        }
        let entry = table_address as usize;
        write::<u32>(entry, pci::msi_address(apic_id));
        write::<u32>(entry + 4, 0);
        write::<u32>(entry + 8, u32::from(vector));
        write::<u32>(entry + 12, 0);
        let control = function.read16(msix + 2);
        function.write16(msix + 2, control & !MSIX_FUNCTION_MASK | MSIX_ENABLE);
        write::<u16>(self.common + MSIX_CONFIG, NO_VECTOR);
        true
    }
}

impl Transport for Pci {
    fn status(&self) -> u8 {
        read::<u8>(self.common + DEVICE_STATUS)
    }

    fn set_status(&self, status: u8) {
        write::<u8>(self.common + DEVICE_STATUS, status);
    }

    fn device_features(&self) -> u64 {
        write::<u32>(self.common + DEVICE_FEATURE_SELECT, 0);
        let low = read::<u32>(self.common + DEVICE_FEATURE);
        write::<u32>(self.common + DEVICE_FEATURE_SELECT, 1);
        let high = read::<u32>(self.common + DEVICE_FEATURE);
        u64::from(high) << 32 | u64::from(low)
    }

    fn set_driver_features(&self, features: u64) {
        write::<u32>(self.common + DRIVER_FEATURE_SELECT, 0);
        write::<u32>(self.common + DRIVER_FEATURE, features as u32);
        write::<u32>(self.common + DRIVER_FEATURE_SELECT, 1);
        write::<u32>(self.common + DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn modern(&self) -> bool {
        true
    }

    fn set_up_queue(&self, queue: u16, size: u16, rings: Rings, interrupt: bool) -> bool {
        let common = self.common;
        write::<u16>(common + QUEUE_SELECT, queue);
        if read::<u16>(common + QUEUE_SIZE) < size || usize::from(queue) >= MAX_QUEUES {
            return false;
        }
        write::<u16>(common + QUEUE_SIZE, size);
        write::<u16>(common + QUEUE_MSIX_VECTOR, if interrupt { 0 } else { NO_VECTOR });
        for (register, address) in [
            (QUEUE_DESC, rings.descriptors),
            (QUEUE_DRIVER, rings.driver),
            (QUEUE_DEVICE, rings.device),
        ] {
            write::<u32>(common + register, address as u32);
            write::<u32>(common + register + 4, (address >> 32) as u32);
        }
        let offset = usize::from(read::<u16>(common + QUEUE_NOTIFY_OFF));
        self.notify_at[usize::from(queue)].set(self.notify + offset * self.multiplier);
        write::<u16>(common + QUEUE_ENABLE, 1);
        true
    }

    fn notify(&self, queue: u16) {
        write::<u16>(self.notify_at[usize::from(queue) % MAX_QUEUES].get(), queue);
    }

    fn acknowledge(&self) {
        // MSI-X: nothing to acknowledge at the device.
    }

    fn config8(&self, offset: usize) -> u8 {
        read::<u8>(self.device + offset)
    }
}
