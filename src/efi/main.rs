//! The UEFI program (`\EFI\BOOT\BOOTX64.EFI` on the disks and the CD): the same VM for machines
//! that boot UEFI.
//!
//! Boot flow: the firmware calls `efi_main` in long mode with memory mapped one to one. It
//! prints the message on the firmware console (the screen), finds the ACPI power-management
//! registers through the RSDP in the configuration table, and leaves boot services: the
//! firmware's 100 Hz timer stops and the machine is the program's. Then it does what the ROM
//! does, with the same modules: prints the message on COM1, stops the 8254 and the local APIC
//! timer, programs the 8259s to deliver only the keyboard, COM1 and the ACPI SCI (to vectors
//! above the CPU's exceptions), the local APIC to let them through, and sleeps in `hlt` until
//! one of them comes: a byte on COM1 is echoed; the power button, a key or Ctrl-D powers off.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod firmware;
mod interrupts;

use r_efi::efi::{Handle, Status, SystemTable};
use vm512::{acpi, idle, keyboard, lapic, message, pic, pit, serial};

core::arch::global_asm!(include_str!("../asm/efi.s"));

/// The message as the firmware console takes it: UCS-2, a line of its own, NUL-terminated.
fn message_ucs2() -> [u16; message::ROOM + 3] {
    let mut text = [0u16; message::ROOM + 3];
    text[0] = b'\r'.into();
    text[1] = b'\n'.into();
    let mut length = 2;
    message::for_each_byte(|byte| {
        text[length] = byte.into();
        length += 1;
    });
    text
}

/// The firmware's entry point for an application image.
#[unsafe(export_name = "efi_main")]
extern "efiapi" fn efi_main(image: Handle, system: *mut SystemTable) -> Status {
    // SAFETY: the firmware passes a valid system table.
    let system = unsafe { &*system };
    firmware::print(system, &message_ucs2());
    let pm = match firmware::rsdp(system) {
        Some(rsdp) => acpi::pm_from_rsdp(rsdp),
        None => acpi::NO_PM,
    };
    if let Err(status) = firmware::exit_boot_services(image, system) {
        // Still the firmware's machine: hand it back, which names the error on its console.
        return status;
    }
    // The machine is ours now: COM1 gets the line, standing on its own after whatever the
    // firmware's serial console wrote.
    serial::init();
    serial::write(b'\r');
    serial::write(b'\n');
    message::for_each_byte(serial::write);
    interrupts::install();
    lapic::stop_timer();
    pit::stop();
    pic::wait_for_events(pic::LONG_MODE_VECTORS, pm.sci);
    lapic::pass_through_8259();
    keyboard::discard_pending();
    idle::forever(pm, keyboard::key_waiting)
}
