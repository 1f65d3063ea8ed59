//! The UEFI program (`\EFI\BOOT\BOOTX64.EFI` on the disks and the CD): the same VM for machines
//! that boot UEFI.
//!
//! Boot flow: the firmware calls `efi_main` in long mode with memory mapped one to one. It
//! prints the message on the firmware console (the screen), takes the RSDP from the
//! configuration table, and leaves boot services: the firmware's 100 Hz timer stops and the
//! machine is the program's. Then the 64-bit core (`src/core64/`) runs it with the PC's fixed
//! hardware: the message on COM1, no timer, the 8259s delivering only the keyboard, COM1 and
//! the ACPI SCI, and `hlt` until one of them comes.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod firmware;

use r_efi::efi::{Handle, Status, SystemTable};
use vm512::core64::{self, Pc};
use vm512::message;

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
    let rsdp = firmware::rsdp(system);
    if let Err(status) = firmware::exit_boot_services(image, system) {
        // Still the firmware's machine: hand it back, which names the error on its console.
        return status;
    }
    core64::run::<Pc>(rsdp.map(u64::from))
}
