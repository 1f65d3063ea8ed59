//! The boot sector: the BIOS loads these 512 bytes at 0x7C00 and jumps to them.
//!
//! Boot flow: `asm/boot_sector.s` far-jumps to 0000:7C05, `asm/start.s` sets segments, stack and
//! unreal mode, then `vm_main` programs COM1, finds the ACPI power-management registers, prints
//! the message on COM1 and through BIOS INT 10h, stops the BIOS's timer tick, and sleeps in
//! `hlt` until the keyboard, COM1 or the power button interrupts it.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod bios;

use vm512::{acpi, idle, message, pic, serial};

core::arch::global_asm!(include_str!("../asm/boot_sector.s"));

/// Entered from `asm/start.s`, which runs on into it, never called: it never returns.
#[unsafe(no_mangle)]
extern "C" fn vm_main() -> ! {
    serial::init();
    // Before the first BIOS call, while DS still reaches all memory (asm/start.s).
    let pm = acpi::find_pm();
    message::for_each_byte(|byte| {
        serial::write(byte);
        bios::teletype(byte);
    });
    // No tick from here on: the VM sleeps until the keyboard, COM1 or the SCI interrupts it.
    pic::stop_the_tick_and_wait_for_events_under_bios();
    idle::forever(pm, bios::key_waiting)
}
