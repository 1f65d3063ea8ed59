//! ACPI fixed-hardware power management: the power button and soft-off (S5).
//!
//! The PM1a event block holds PM1_STS (status) and, right behind it, PM1_EN (enable); the PM1a
//! control block holds PM1_CNT. The boot sector finds them in the ACPI tables the BIOS left
//! (RSDP, then RSDT or XSDT, then the FADT), the ROM by switching the chipset's PM I/O on itself.

pub mod aml;
pub mod tables;

use crate::port::outw;

/// PM1_STS / PM1_EN bit 8: the power button (status latches only while it is enabled).
const PWRBTN: u16 = 1 << 8;
/// PM1_CNT bit 13: enter the sleep state in SLP_TYP (bits 10-12).
const SLP_EN: u16 = 1 << 13;
/// Bit position of SLP_TYP in PM1_CNT.
const SLP_TYP_SHIFT: u16 = 10;
/// SLP_TYP for S5 when the DSDT has no usable `\_S5`: 0, the value of QEMU's (PIIX4 and ICH9)
/// and PIIX4's own.
pub const S5_FALLBACK: u8 = 0;

/// Where the VM enters S5, and where the power button latches.
#[derive(Clone, Copy)]
pub struct Pm {
    /// PM1a_STS (write 1 to a bit to clear it), or 0 where the firmware names no PM1a event
    /// block (hardware-reduced ACPI): then there is no fixed power button to poll.
    pub status: u16,
    /// PM1a_CNT's I/O port; 0: nowhere (no ACPI, or hardware-reduced ACPI): the VM never powers
    /// itself off.
    pub control: u16,
    /// What enters S5 there: SLP_TYP | SLP_EN, in that register's layout.
    pub sleep: u16,
    /// The 8259 IRQ line the SCI (which the power button raises) arrives on: the FADT's
    /// SCI_INT, or [`NO_SCI`]. The boot sector does not read it (bytes): it takes IRQ 9 (`pic`).
    pub sci: u8,
}

/// No SCI on any 8259 line: no ACPI, or an SCI_INT above 15 (an I/O APIC input only).
pub const NO_SCI: u8 = 0xFF;

/// The SCI's line on the chipsets the ROM sets up: PIIX4 and ICH9 wire it to IRQ 9 (ICH9's
/// ACPI_CNTL SCI_IRQ_SEL left 0), as every BIOS on them reports in SCI_INT.
pub const CHIPSET_SCI: u8 = 9;

/// No ACPI: no power button, no way to power off.
pub const NO_PM: Pm = Pm { status: 0, control: 0, sleep: 0, sci: NO_SCI };

/// PM1 event block length: PM1_STS and PM1_EN, 2 bytes each.
pub const PM1_EVT_LEN: u8 = 4;

impl Pm {
    /// Takes the PM1a registers from the event and control block ports and the S5 SLP_TYP
    /// value, and enables the power-button event: it latches from
    /// here on, and the idle loop polls it. An event block of 0 (none) is left alone.
    #[inline(always)]
    pub fn enable(event_block: u16, control_block: u16, s5: u8, sci: u16) -> Pm {
        if event_block != 0 {
            // PM1_EN is the second half of the event block: PM1_EVT_LEN is 4 on every chipset
            // and hypervisor we know (PIIX4, ICH9, VirtualBox, Hyper-V, VMware), so it is not
            // read (5 bytes). One asm block, DX stepped from PM1_STS to PM1_EN: 6 bytes fewer in
            // the boot sector than two port writes.
            // SAFETY: PM1a registers named by the firmware or set up by the ROM. Clear a stale
            // press first (real hardware latches the one that powered it on), then enable it.
            unsafe {
                core::arch::asm!(
                    "out dx, ax",
                    ".rept {step}",
                    "inc dx",
                    ".endr",
                    "out dx, ax",
                    step = const PM1_EVT_LEN / 2,
                    inout("dx") event_block => _,
                    in("ax") PWRBTN,
                    options(nomem, nostack),
                )
            };
        }
        Pm {
            status: event_block,
            control: control_block,
            sleep: ((s5 & 7) as u16) << SLP_TYP_SHIFT | SLP_EN,
            sci: if sci < 16 { sci as u8 } else { NO_SCI },
        }
    }

    /// Whether the power button has been pressed since it was enabled.
    #[inline(always)]
    pub fn power_button_pressed(self) -> bool {
        self.status != 0 && power_button_status(self.status)
    }

    /// Enters S5 (soft off). Returns at once where there is no ACPI, or if the hardware ignores
    /// it.
    #[inline(always)]
    pub fn power_off(self) {
        if self.control != 0 {
            // SAFETY: PM1_CNT; powering off is the point.
            unsafe { outw(self.control, self.sleep) };
        }
    }
}

/// PWRBTN_STS in PM1_STS at `status`. In the 16-bit images PM1_STS is read whole (a word
/// register) and the bit tested in its high byte, AH: 10 bytes fewer in the boot sector than the
/// compiler's test of the word.
#[cfg(target_arch = "x86")]
#[inline(always)]
fn power_button_status(status: u16) -> bool {
    let high: u8;
    // SAFETY: reading PM1_STS has no side effect.
    unsafe {
        core::arch::asm!(
            "in ax, dx",
            in("dx") status,
            out("ah") high,
            out("al") _,
            options(nomem, nostack, preserves_flags),
        )
    };
    high & (PWRBTN >> 8) as u8 != 0
}

/// PWRBTN_STS in PM1_STS at `status` (64-bit code has no AH operand; the word test is as small).
#[cfg(not(target_arch = "x86"))]
fn power_button_status(status: u16) -> bool {
    // SAFETY: reading PM1_STS has no side effect.
    unsafe { crate::port::inw(status) & PWRBTN != 0 }
}

/// FADT fields (offsets from the table's start, ACPI 6.5 table 5.9).
mod fadt {
    /// Table length, in every table's header.
    pub const LENGTH: u32 = 4;
    pub const DSDT: u32 = 40;
    /// The SCI's interrupt (a 2-byte field): an 8259 IRQ, or an I/O APIC input above 15.
    pub const SCI_INT: u32 = 46;
    pub const PM1A_EVT_BLK: u32 = 56;
    pub const PM1A_CNT_BLK: u32 = 64;
}

/// Reads where to power off out of the ACPI tables a BIOS left in memory and enables the power
/// button; [`NO_PM`] when there are no tables (`-machine acpi=off`), no FADT, or neither PM1a
/// control block nor sleep control register. Walks memory above 64 KiB: call it while the
/// unreal-mode limits from `asm/start.s` hold, before any BIOS call.
///
/// Done as an OS does it, as far as the boot sector's bytes allow. Left out, with the risk:
/// the RSDP's checksum (a stray "RSD PTR " in the BIOS area before the real one would be taken;
/// SeaBIOS and other BIOSes put only the RSDP there) and its revision before the XSDT (read only
/// when the RSDT address is 0, which an ACPI 1.0 RSDP never has); enabling ACPI mode through
/// SMI_CMD where the FADT says the machine starts in legacy mode (there, a power button that
/// firmware routes to SMI would go unnoticed; QEMU latches PWRBTN_STS in both modes).
#[inline(always)]
pub fn find_pm() -> Pm {
    match find_rsdp() {
        Some(rsdp) => pm_from_rsdp(rsdp),
        None => NO_PM,
    }
}

/// As [`find_pm`], from an RSDP found elsewhere (UEFI firmware names it in its configuration
/// table).
#[inline(always)]
pub fn pm_from_rsdp(rsdp: u32) -> Pm {
    // RSDP+16: the RSDT's address (32-bit entries). An ACPI 2.0+ RSDP may leave it 0 and give
    // only the XSDT at RSDP+24 (64-bit entries). Both are walked 4 bytes at a time: an XSDT
    // entry's high half is 0 for every table below 4 GiB (the only ones a 32-bit pointer
    // reaches), and what address 0 holds (the interrupt vector table) is no "FACP" (10 bytes).
    let sdt = match read32(rsdp + 16) {
        0 => read32(rsdp + 24),
        rsdt => rsdt,
    };
    let end = sdt + read32(sdt + fadt::LENGTH); // entries from +36
    let mut entry = sdt + 36;
    while entry < end {
        let table = read32(entry);
        if read32(table) == signature(b"FACP") {
            let s5 = s5_sleep_type(read32(table + fadt::DSDT));
            let control = read32(table + fadt::PM1A_CNT_BLK) as u16;
            if control != 0 {
                let sci = read32(table + fadt::SCI_INT) as u16;
                return Pm::enable(read32(table + fadt::PM1A_EVT_BLK) as u16, control, s5, sci);
            }
            // Hardware-reduced ACPI (PM1a_CNT_BLK 0): no fixed registers, so nothing to touch.
            // Its sleep control register is memory-mapped on the platforms that have one
            // (QEMU microvm): reaching it after BIOS calls means restoring flat segments first,
            // about 50 bytes the boot sector does not have. So there the VM does not power
            // itself off; it prints, echoes and idles.
            return NO_PM;
        }
        entry += 4;
    }
    NO_PM
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
/// `"_S5_" 12 <PkgLength> <NumElements> <a>`; S5_FALLBACK when absent. A package this small
/// (under 64 bytes) has a one-byte PkgLength (ACPI 6.5, 20.2.4), so `a` is 3 bytes after the
/// name's end: a BytePrefix and the byte, or ZeroOp (0) / OneOp (1), which stand for themselves.
#[inline(always)]
fn s5_sleep_type(dsdt: u32) -> u8 {
    let end = dsdt + read32(dsdt + 4);
    let mut at = dsdt + 36;
    while at < end {
        if read32(at) == signature(b"_S5_") {
            return match read8(at + 7) {
                AML_BYTE_PREFIX => read8(at + 8),
                value => value,
            };
        }
        at += 1;
    }
    S5_FALLBACK
}

/// AML BytePrefix: the next byte is the value.
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
