//! The virtio-mmio transport (Virtual I/O Device 1.2, 4.2): one register window per device, an
//! interrupt line (a GSI) per device. Version 2, the modern interface (Firecracker; QEMU
//! `microvm` with `-global virtio-mmio.force-legacy=false`), and version 1, the legacy one
//! (4.2.4; QEMU `microvm`'s default): a page-frame number for one area per queue, 32 feature
//! bits, no FEATURES_OK. Device-agnostic, through [`Transport`].

use super::virtio::{Rings, Transport, read, write};

/// Register offsets (4.2.2; the legacy ones from 4.2.4).
const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
/// Legacy: the guest's page size, for [`QUEUE_PFN`].
const GUEST_PAGE_SIZE: usize = 0x028;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
/// Legacy: the used ring's alignment within the queue's area.
const QUEUE_ALIGN: usize = 0x03C;
/// Legacy: the queue's area, in guest pages (0: stopped).
const QUEUE_PFN: usize = 0x040;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;
const STATUS: usize = 0x070;
const QUEUE_DESC_LOW: usize = 0x080;
const QUEUE_DRIVER_LOW: usize = 0x090;
const QUEUE_DEVICE_LOW: usize = 0x0A0;
/// The device-specific configuration.
const CONFIG: usize = 0x100;

/// "virt", little endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
const LEGACY: u32 = 1;
const MODERN: u32 = 2;
/// The page size given to a legacy device.
const PAGE: u32 = 4096;
/// The smallest window that holds the registers and a device configuration.
pub const MIN_SIZE: u64 = 0x200;

/// A virtio device on virtio-mmio.
pub struct Mmio {
    base: usize,
    modern: bool,
}

impl Mmio {
    /// The device at `address`, if one answers there with the virtio magic value, a version
    /// the driver knows and device ID `device` (0 is an empty slot: QEMU `microvm` lists them
    /// all).
    pub fn at(address: u64, device: u32) -> Option<Mmio> {
        let base = usize::try_from(address).ok()?;
        let version = read::<u32>(base + VERSION);
        let known = read::<u32>(base + MAGIC) == MAGIC_VALUE && matches!(version, LEGACY | MODERN);
        (known && read::<u32>(base + DEVICE_ID) == device)
            .then_some(Mmio { base, modern: version == MODERN })
    }

    fn write32(&self, offset: usize, value: u32) {
        write::<u32>(self.base + offset, value);
    }

    fn read32(&self, offset: usize) -> u32 {
        read::<u32>(self.base + offset)
    }
}

impl Transport for Mmio {
    fn status(&self) -> u8 {
        self.read32(STATUS) as u8
    }

    fn set_status(&self, status: u8) {
        self.write32(STATUS, u32::from(status));
    }

    fn device_features(&self) -> u64 {
        self.write32(DEVICE_FEATURES_SEL, 0);
        let low = self.read32(DEVICE_FEATURES);
        if !self.modern {
            return u64::from(low);
        }
        self.write32(DEVICE_FEATURES_SEL, 1);
        u64::from(self.read32(DEVICE_FEATURES)) << 32 | u64::from(low)
    }

    fn set_driver_features(&self, features: u64) {
        self.write32(DRIVER_FEATURES_SEL, 0);
        self.write32(DRIVER_FEATURES, features as u32);
        if self.modern {
            self.write32(DRIVER_FEATURES_SEL, 1);
            self.write32(DRIVER_FEATURES, (features >> 32) as u32);
        }
    }

    fn modern(&self) -> bool {
        self.modern
    }

    fn set_up_queue(&self, queue: u16, size: u16, rings: Rings, _interrupt: bool) -> bool {
        self.write32(QUEUE_SEL, u32::from(queue));
        if self.read32(QUEUE_NUM_MAX) < u32::from(size) {
            return false;
        }
        self.write32(QUEUE_NUM, u32::from(size));
        if self.modern {
            for (register, address) in [
                (QUEUE_DESC_LOW, rings.descriptors),
                (QUEUE_DRIVER_LOW, rings.driver),
                (QUEUE_DEVICE_LOW, rings.device),
            ] {
                self.write32(register, address as u32);
                self.write32(register + 4, (address >> 32) as u32);
            }
            self.write32(QUEUE_READY, 1);
            return true;
        }
        // Legacy: one page-aligned area, the available ring right after the descriptors and
        // the used ring at the next multiple of QueueAlign; the virtqueue's layout is that
        // with an alignment of its used ring's offset (a power of two).
        let offset = rings.device - rings.descriptors;
        let aligned = offset.is_power_of_two() && rings.descriptors % u64::from(PAGE) == 0;
        let Ok(pfn) = u32::try_from(rings.descriptors / u64::from(PAGE)) else { return false };
        if !aligned || rings.driver - rings.descriptors != 16 * u64::from(size) {
            return false;
        }
        self.write32(GUEST_PAGE_SIZE, PAGE);
        self.write32(QUEUE_ALIGN, offset as u32);
        self.write32(QUEUE_PFN, pfn);
        true
    }

    fn notify(&self, queue: u16) {
        self.write32(QUEUE_NOTIFY, u32::from(queue));
    }

    fn acknowledge(&self) {
        let status = self.read32(INTERRUPT_STATUS);
        if status != 0 {
            self.write32(INTERRUPT_ACK, status);
        }
    }

    fn config8(&self, offset: usize) -> u8 {
        read::<u8>(self.base + CONFIG + offset)
    }
}
