//! PCI configuration space through the PC's configuration mechanism #1 (I/O ports 0xCF8 and
//! 0xCFC, PCI Local Bus 3.0, 3.2.2.3.2): finding a device, its BARs and its capabilities.
//! Every PC-like VMM with PCI has it (QEMU pc and q35, VirtualBox, VMware, Hyper-V gen 1);
//! the firmware (SeaBIOS, OVMF) has assigned the BARs and the interrupt line before we run.

use crate::port;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
/// Bit 31 of CONFIG_ADDRESS: the access goes to configuration space.
const ENABLE: u32 = 1 << 31;

/// Header offsets (PCI 3.0, 6.1).
const VENDOR_DEVICE: u8 = 0x00;
const COMMAND: u8 = 0x04;
const STATUS: u8 = 0x06;
const HEADER_TYPE: u8 = 0x0E;
const BAR0: u8 = 0x10;
const SECONDARY_BUS: u8 = 0x19;
const CAPABILITIES: u8 = 0x34;
const INTERRUPT_LINE: u8 = 0x3C;
/// Command bits: memory space, bus master; INTx disable.
const MEMORY_SPACE: u16 = 1 << 1;
const BUS_MASTER: u16 = 1 << 2;
const INTX_DISABLE: u16 = 1 << 10;
/// Status bit 4: the capability list is there.
const HAS_CAPABILITIES: u16 = 1 << 4;
/// Header type: bit 7 multi-function; type 1 a PCI-to-PCI bridge.
const MULTI_FUNCTION: u8 = 0x80;
const BRIDGE: u8 = 0x01;
/// No device answers: the vendor ID reads all ones.
const ABSENT: u16 = 0xFFFF;
/// The most buses a search walks (the root and the bridges below it).
const MAX_BUSES: usize = 32;
/// The most capabilities followed in one list (a loop in a broken list ends here).
const MAX_CAPABILITIES: usize = 48;

/// MSI capability (ID 0x05) and MSI-X (ID 0x11).
pub const CAP_MSI: u8 = 0x05;
pub const CAP_MSIX: u8 = 0x11;
/// Vendor-specific capability (virtio's structures).
pub const CAP_VENDOR: u8 = 0x09;

/// Where MSI messages go: the local APIC of CPU `id`, fixed delivery, physical destination.
pub fn msi_address(apic_id: u8) -> u32 {
    0xFEE0_0000 | u32::from(apic_id) << 12
}

/// One function's configuration space.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Function {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl Function {
    fn address(self, offset: u8) -> u32 {
        ENABLE
            | u32::from(self.bus) << 16
            | u32::from(self.device) << 11
            | u32::from(self.function) << 8
            | u32::from(offset & 0xFC)
    }

    pub fn read32(self, offset: u8) -> u32 {
        // SAFETY: configuration mechanism #1: an address, then its data.
        unsafe {
            port::outl(CONFIG_ADDRESS, self.address(offset));
            port::inl(CONFIG_DATA)
        }
    }

    pub fn write32(self, offset: u8, value: u32) {
        // SAFETY: as in `read32`; the caller picks what to change.
        unsafe {
            port::outl(CONFIG_ADDRESS, self.address(offset));
            port::outl(CONFIG_DATA, value);
        }
    }

    pub fn read16(self, offset: u8) -> u16 {
        (self.read32(offset) >> ((offset & 2) * 8)) as u16
    }

    pub fn write16(self, offset: u8, value: u16) {
        let shift = (offset & 2) * 8;
        let word = self.read32(offset) & !(0xFFFF << shift) | u32::from(value) << shift;
        self.write32(offset, word);
    }

    pub fn read8(self, offset: u8) -> u8 {
        (self.read32(offset) >> ((offset & 3) * 8)) as u8
    }

    /// (vendor, device) IDs.
    pub fn ids(self) -> (u16, u16) {
        let ids = self.read32(VENDOR_DEVICE);
        (ids as u16, (ids >> 16) as u16)
    }

    /// The memory address BAR `index` decodes (64-bit BARs take two slots), if it is a memory
    /// BAR the firmware placed.
    pub fn memory_bar(self, index: u8) -> Option<u64> {
        let offset = BAR0 + 4 * index;
        let low = self.read32(offset);
        if low & 1 != 0 {
            return None; // an I/O BAR
        }
        let mut address = u64::from(low & !0xF);
        if (low >> 1) & 0b11 == 0b10 {
            address |= u64::from(self.read32(offset + 4)) << 32;
        }
        (address != 0).then_some(address)
    }

    /// Lets the device decode its memory BARs and master the bus (DMA, MSI); with `intx` false
    /// its INTx line stays quiet (it signals by MSI).
    pub fn enable(self, intx: bool) {
        let mut command = self.read16(COMMAND) | MEMORY_SPACE | BUS_MASTER;
        if intx {
            command &= !INTX_DISABLE;
        } else {
            command |= INTX_DISABLE;
        }
        self.write16(COMMAND, command);
    }

    /// The ISA IRQ the firmware routed INTx to (the interrupt line register), if any.
    pub fn interrupt_line(self) -> Option<u8> {
        let line = self.read8(INTERRUPT_LINE);
        (1..16).contains(&line).then_some(line)
    }

    /// Each capability's (ID, offset in configuration space), in list order.
    pub fn capabilities(self) -> impl Iterator<Item = (u8, u8)> {
        let mut next =
            if self.read16(STATUS) & HAS_CAPABILITIES != 0 { self.read8(CAPABILITIES) } else { 0 };
        (0..MAX_CAPABILITIES).map_while(move |_| {
            let at = next & 0xFC;
            if at < 0x40 {
                return None;
            }
            let header = self.read16(at);
            next = (header >> 8) as u8;
            Some((header as u8, at))
        })
    }

    /// The first capability with this ID.
    pub fn capability(self, id: u8) -> Option<u8> {
        self.capabilities().find(|&(cap, _)| cap == id).map(|(_, at)| at)
    }

    /// Points the MSI capability at `apic_id` with `vector` and enables it; `false` where the
    /// function has none.
    pub fn enable_msi(self, apic_id: u8, vector: u8) -> bool {
        let Some(cap) = self.capability(CAP_MSI) else { return false };
        let control = self.read16(cap + 2);
        let is_64 = control & (1 << 7) != 0;
        self.write32(cap + 4, msi_address(apic_id));
        let data = if is_64 {
            self.write32(cap + 8, 0);
            cap + 12
        } else {
            cap + 8
        };
        self.write16(data, u16::from(vector));
        // Enable, one message (multiple message enable bits 4-6 = 0).
        self.write16(cap + 2, control & !(0b111 << 4) | 1);
        true
    }
}

/// The first function, on bus 0 or behind its bridges, for which `wanted` says yes to its
/// (vendor, device) IDs.
pub fn find(wanted: impl Fn(u16, u16) -> bool) -> Option<Function> {
    let mut buses = [0u8; MAX_BUSES];
    let mut known = 1;
    let mut next = 0;
    while next < known {
        let bus = buses[next];
        next += 1;
        for device in 0..32 {
            for function in 0..8 {
                let f = Function { bus, device, function };
                let (vendor, id) = f.ids();
                if vendor == ABSENT {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                if wanted(vendor, id) {
                    return Some(f);
                }
                let header = f.read8(HEADER_TYPE);
                if header & 0x7F == BRIDGE {
                    let secondary = f.read8(SECONDARY_BUS);
                    if secondary != 0 && known < MAX_BUSES && !buses[..known].contains(&secondary) {
                        buses[known] = secondary;
                        known += 1;
                    }
                }
                if function == 0 && header & MULTI_FUNCTION == 0 {
                    break;
                }
            }
        }
    }
    None
}
