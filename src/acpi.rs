//! ACPI fixed-hardware power management: the power button and soft-off (S5).
//!
//! The PM1a event block holds PM1_STS (status) and, right behind it, PM1_EN (enable); the PM1a
//! control block holds PM1_CNT. The boot sector finds them in the ACPI tables the BIOS left
//! (RSDP, then RSDT or XSDT, then the FADT), the ROM by switching the chipset's PM I/O on itself.

use crate::port::{inw, outw};

/// PM1_STS / PM1_EN bit 8: the power button (status latches only while it is enabled).
const PWRBTN: u16 = 1 << 8;
/// PM1_CNT bit 13: enter the sleep state in SLP_TYP (bits 10-12).
const SLP_EN: u16 = 1 << 13;
/// Bit position of SLP_TYP in PM1_CNT.
const SLP_TYP_SHIFT: u16 = 10;
/// SLP_TYP for S5 when the DSDT has no usable `\_S5`: 0, the value of QEMU's (PIIX4 and ICH9)
/// and PIIX4's own.
pub const S5_FALLBACK: u8 = 0;

/// The PM1a registers the idle loop needs, as I/O ports, with the power button enabled.
#[derive(Clone, Copy)]
pub struct Pm {
    /// PM1a_STS: write 1 to a bit to clear it.
    pub status: u16,
    /// PM1a_CNT.
    pub control: u16,
    /// SLP_TYP for S5, already shifted into place.
    pub sleep_type: u16,
}

impl Pm {
    /// Takes the PM1a registers from the event and control block ports, the event block's
    /// length and the S5 SLP_TYP value, and enables the power-button event: it latches from
    /// here on, and the idle loop polls it.
    #[inline(always)]
    pub fn enable(event_block: u16, event_length: u8, control_block: u16, s5: u8) -> Pm {
        // PM1_EN is the second half of the event block.
        let enable = event_block + (event_length / 2) as u16;
        // SAFETY: PM1a registers named by the firmware or set up by the ROM. Clear a stale
        // press first (real hardware latches the one that powered it on).
        unsafe {
            outw(event_block, PWRBTN);
            outw(enable, PWRBTN);
        }
        Pm {
            status: event_block,
            control: control_block,
            sleep_type: ((s5 & 7) as u16) << SLP_TYP_SHIFT,
        }
    }

    /// Whether the power button has been pressed since it was enabled.
    #[inline(always)]
    pub fn power_button_pressed(self) -> bool {
        // SAFETY: reading PM1_STS has no side effect.
        unsafe { inw(self.status) & PWRBTN != 0 }
    }

    /// Enters S5 (soft off). Returns only if the hardware ignores it.
    #[inline(always)]
    pub fn power_off(self) {
        // SAFETY: PM1_CNT; powering off is the point.
        unsafe { outw(self.control, self.sleep_type | SLP_EN) };
    }
}

/// Reads the PM1a registers out of the ACPI tables a BIOS left in memory and enables the power
/// button, or `None` when there are no tables (`-machine acpi=off`) or no FADT. Walks memory above 64 KiB: call it while the
/// unreal-mode limits from `asm/start.s` hold, before any BIOS call.
#[inline(always)]
pub fn find_pm() -> Option<Pm> {
    let rsdp = find_rsdp()?;
    // RSDP+16: the RSDT's address (32-bit entries). An ACPI 2.0+ RSDP may leave it 0 and give
    // only the XSDT at RSDP+24 (64-bit entries, of which we read the low half).
    let (sdt, entry_size) = match read32(rsdp + 16) {
        0 => (read32(rsdp + 24), 8),
        rsdt => (rsdt, 4),
    };
    let end = sdt + read32(sdt + 4); // header: length at +4, entries from +36
    let mut entry = sdt + 36;
    while entry < end {
        let fadt = read32(entry);
        if read32(fadt) == signature(b"FACP") {
            // FADT: DSDT at +40, PM1a_EVT_BLK at +56, PM1a_CNT_BLK at +64, PM1_EVT_LEN at +88.
            let s5 = s5_sleep_type(read32(fadt + 40));
            return Some(Pm::enable(
                read32(fadt + 56) as u16,
                read8(fadt + 88),
                read32(fadt + 64) as u16,
                s5,
            ));
        }
        entry += entry_size;
    }
    None
}

/// The RSDP: "RSD PTR " on a 16-byte boundary in the BIOS area 0xE0000-0xFFFFF (where SeaBIOS
/// and most BIOSes put it; the EBDA, the other place the spec names, is not searched).
#[inline(always)]
fn find_rsdp() -> Option<u32> {
    let mut at = 0xE_0000;
    while at < 0x10_0000 {
        if read32(at) == signature(b"RSD ") && read32(at + 4) == signature(b"PTR ") {
            return Some(at);
        }
        at += 16;
    }
    None
}

/// SLP_TYPa for S5 from the DSDT's `Name (_S5, Package () { a, b, ... })`, AML
/// `"_S5_" 12 <PkgLength> <NumElements> <a>`; S5_FALLBACK when absent or not in that form.
#[inline(always)]
fn s5_sleep_type(dsdt: u32) -> u8 {
    let end = dsdt + read32(dsdt + 4);
    let mut at = dsdt + 36;
    while at < end {
        if read32(at) == signature(b"_S5_") && read8(at + 4) == AML_PACKAGE_OP {
            // PkgLength's first byte counts its follow-on bytes in bits 7-6; NumElements follows.
            let first = at + 7 + (read8(at + 5) >> 6) as u32;
            // The element: BytePrefix + byte, or ZeroOp (0) / OneOp (1) standing for themselves.
            return match read8(first) {
                AML_BYTE_PREFIX => read8(first + 1),
                value => value,
            };
        }
        at += 1;
    }
    S5_FALLBACK
}

/// AML opcodes the `_S5` parse needs.
const AML_PACKAGE_OP: u8 = 0x12;
const AML_BYTE_PREFIX: u8 = 0x0A;

/// A 4-byte table signature as the little-endian word it reads as.
const fn signature(name: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*name)
}

/// Reads physical memory (DS has a 4 GiB limit and base 0: see `asm/start.s`).
#[inline(always)]
fn read32(address: u32) -> u32 {
    // SAFETY: reading firmware tables; x86 allows unaligned loads.
    unsafe { core::ptr::with_exposed_provenance::<u32>(address as usize).read_unaligned() }
}

#[inline(always)]
fn read8(address: u32) -> u8 {
    // SAFETY: as above.
    unsafe { core::ptr::with_exposed_provenance::<u8>(address as usize).read() }
}
