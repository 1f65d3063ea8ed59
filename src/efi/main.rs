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

mod entry;
mod firmware;

use r_efi::efi::{Handle, Status, SystemTable};
use vm512::core64::{Pc, Quiet};

/// The firmware's entry point for an application image.
#[unsafe(export_name = "efi_main")]
extern "efiapi" fn efi_main(image: Handle, system: *mut SystemTable) -> Status {
    entry::enter::<Pc, Quiet>(image, system)
}
