//! The ROM: the same VM as a flat BIOS image that the CPU runs from its reset vector, with no
//! BIOS below it (QEMU `-bios` or pflash).
//!
//! Boot flow: `asm/rom.s` runs at the reset vector, fills the interrupt vector table, copies the
//! payload to 0x7C00 and jumps to the shared `asm/start.s`, which enters `vm_main` below, as in
//! the boot sector. Then: program COM1, print the message on COM1 (there is no INT 10h and no
//! initialised VGA), switch the chipset's ACPI power management on (`chipset.rs`), and idle until
//! the power button or a key asks it to power off.
//!
//! How the ROM idles: with no BIOS nothing programs the interrupt controller, and QEMU's timer
//! ticks from reset. The ROM stops the 8254 PIT (`pit::stop`), programs the 8259 PIC to deliver
//! only what the VM answers, in auto-EOI mode, to vectors whose handler is a bare `iret`: the
//! keyboard (IRQ 1), COM1 (IRQ 4; the UART raises it when bytes arrive) and the ACPI SCI (IRQ 9,
//! raised by the power button); and the local APIC to let the 8259 through. `idle::forever` then
//! sleeps in `hlt` until one of those comes, answers it, and sleeps again: no periodic wake-up.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod chipset;

use vm512::{idle, keyboard, lapic, message, pic, pit, serial};

core::arch::global_asm!(include_str!("../asm/rom.s"));

/// Entered from `asm/start.s`, which runs on into it, never called: it never returns.
#[unsafe(no_mangle)]
extern "C" fn vm_main() -> ! {
    serial::init();
    message::for_each_byte(serial::write);
    let pm = chipset::enable_power_management();
    pit::stop();
    pic::wait_for_events(pic::REAL_MODE_VECTORS, pm.sci);
    lapic::pass_through_8259();
    idle::forever(pm, keyboard::key_waiting)
}
