//! The net family's UEFI program (`512-byte-vm-net.efi`, `\\EFI\\BOOT\\BOOTX64.EFI` on the net
//! disks): the classic program's flow (`entry`), then the 64-bit core with all of its reach
//! (the MADT and the I/O APIC, the card's interrupts) and the network (`vm512::net`).

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod entry;
mod firmware;

use r_efi::efi::{Handle, Status, SystemTable};
// The service: the network (where there is a card) and the guest agent (where there is a
// virtio-console).
use vm512::agent::NetVm as Service;
use vm512::core64::Reach;

/// A UEFI machine, all of it: the firmware maps all memory and every device's registers one
/// to one, so any address is reachable.
struct Uefi;
impl Reach for Uefi {
    const ANY_MACHINE: bool = true;

    fn map_device(_: u64) -> bool {
        true
    }
}

/// The firmware's entry point for an application image.
#[unsafe(export_name = "efi_main")]
extern "efiapi" fn efi_main(image: Handle, system: *mut SystemTable) -> Status {
    entry::enter::<Uefi, Service>(image, system)
}
