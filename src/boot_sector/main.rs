//! The boot sector: the BIOS loads these 512 bytes at 0x7C00 and jumps to them.
//!
//! Boot flow: `asm/boot_sector.s` far-jumps to 0000:7C05, `asm/start.s` sets segments, stack and
//! unreal mode, then `vm_main` programs COM1, finds the ACPI power-management registers, prints
//! the message on COM1 and through BIOS INT 10h, and idles in `hlt` until the power button or a
//! key asks it to power off.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod bios;

use vm512::{acpi, idle, message, serial};

core::arch::global_asm!(include_str!("../asm/boot_sector.s"));

/// Entered by a jump from `asm/start.s`, never called: it never returns.
#[unsafe(no_mangle)]
extern "C" fn vm_main() -> ! {
    serial::init();
    // Before the first BIOS call, while DS still reaches all memory (asm/start.s).
    let pm = acpi::find_pm();
    message::for_each_byte(|byte| {
        serial::write(byte);
        bios::teletype(byte);
    });
    idle::forever(pm, bios::key_waiting)
}
