//! The 8254 programmable interval timer, channel 0: the tick a BIOS (and QEMU, from reset) runs
//! at 18.2 Hz on IRQ 0. The VM needs no tick: it stops it.

use core::arch::asm;

/// Mode/command port.
pub const COMMAND: u8 = 0x43;
/// Channel 0 data port.
pub const CHANNEL0: u8 = 0x40;

/// Channel 0, high byte of the count only, mode 4 (software-triggered strobe: it counts down
/// once, then never again), BCD. The same byte then serves as the count (0x2900, BCD: 2.4 ms,
/// one last strobe) and, in the boot sector, as the master 8259's mask (`pic`).
///
/// A count must follow the mode word: KVM's in-kernel PIT keeps its periodic host timer until a
/// new count is loaded, even with IRQ 0 masked (a mode word alone left 19 wake-ups per second).
pub const CHANNEL0_ONE_SHOT: u8 = 0b00_10_100_1;

/// Stops channel 0: one last strobe, then no periodic tick at all.
#[inline(always)]
pub fn stop() {
    // SAFETY: the PIT's own ports, in the documented order: mode, then the count. (The short
    // `out imm8, al` form, one AL for both: 6 bytes.)
    unsafe {
        asm!(
            "out {command}, al",
            "out {channel0}, al",
            command = const COMMAND,
            channel0 = const CHANNEL0,
            in("al") CHANNEL0_ONE_SHOT,
            options(nomem, nostack, preserves_flags),
        )
    };
}
