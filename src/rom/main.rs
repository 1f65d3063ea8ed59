//! The ROM: the same VM as a flat BIOS image that the CPU runs from its reset vector, with no
//! BIOS below it (QEMU `-bios` or pflash).
//!
//! Boot flow: `asm/rom.s` runs at the reset vector, fills the interrupt vector table, copies the
//! payload to 0x7C00 and jumps to the shared `asm/start.s`, which enters `vm_main` below, as in
//! the boot sector. Then: program COM1, print the message on COM1 (there is no INT 10h and no
//! initialised VGA), switch the chipset's ACPI power management on (`chipset.rs`), and idle until
//! the power button or a key asks it to power off.
//!
//! How the ROM idles: with no BIOS nothing programs the interrupt controller or the timer, and a
//! `hlt` with nothing to wake it would sleep forever. So the ROM does what a BIOS does: it
//! programs the 8254 PIT for the usual 18.2 Hz tick, the 8259 PIC to deliver only that IRQ, in
//! auto-EOI mode, to a vector whose handler is a bare `iret`, and the local APIC to let the 8259
//! through. `idle::forever` then sleeps in
//! `hlt` and wakes 18 times a second for a few instructions, exactly as under a BIOS: next to no
//! host CPU, and a regular moment to look at the ACPI power-button status (and the keyboard and
//! COM1), which the boot sector polls the same way. A power-button interrupt (SCI) would need
//! the SCI routed and unmasked too; polling on the tick reacts within 55 ms and shares the code.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod chipset;

use vm512::{idle, keyboard, lapic, message, pic, pit, serial};

core::arch::global_asm!(include_str!("../asm/rom.s"));

/// Entered by a jump from `asm/start.s`, never called: it never returns.
#[unsafe(no_mangle)]
extern "C" fn vm_main() -> ! {
    serial::init();
    message::for_each_byte(serial::write);
    let pm = chipset::enable_power_management();
    pit::start_system_tick();
    pic::deliver_only_the_timer(pic::REAL_MODE_VECTORS);
    lapic::pass_through_8259();
    idle::forever(pm, keyboard::key_waiting)
}
