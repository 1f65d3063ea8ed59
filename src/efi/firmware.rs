//! What the UEFI program asks of the firmware before it takes the machine over: the console,
//! the ACPI tables, and leaving boot services.

use r_efi::efi::{Handle, Status, SystemTable};
use r_efi::system::{ACPI_10_TABLE_GUID, ACPI_20_TABLE_GUID};

/// Prints `text` (UCS-2, NUL-terminated) on the firmware console: the screen, and on most
/// platforms a serial terminal too.
pub fn print(system: &SystemTable, text: &[u16]) {
    let out = system.con_out;
    if !out.is_null() {
        // SAFETY: ConOut is the firmware's protocol; `text` ends in a NUL.
        unsafe { ((*out).output_string)(out, text.as_ptr() as *mut u16) };
    }
}

/// The RSDP's address from the configuration table (ACPI 2.0 and later, else 1.0), if the
/// firmware has ACPI tables below 4 GiB.
pub fn rsdp(system: &SystemTable) -> Option<u32> {
    if system.configuration_table.is_null() {
        return None;
    }
    // SAFETY: the firmware's table of `number_of_table_entries` entries.
    let tables = unsafe {
        core::slice::from_raw_parts(system.configuration_table, system.number_of_table_entries)
    };
    [ACPI_20_TABLE_GUID, ACPI_10_TABLE_GUID].iter().find_map(|guid| {
        let table = tables.iter().find(|table| table.vendor_guid == *guid)?;
        u32::try_from(table.vendor_table as usize).ok()
    })
}

/// Bytes for the memory map that ExitBootServices wants to see read first (a VM's map has a
/// few hundred 48-byte descriptors at most).
const MEMORY_MAP_SIZE: usize = 16 * 1024;
static mut MEMORY_MAP: [u8; MEMORY_MAP_SIZE] = [0; MEMORY_MAP_SIZE];

/// Leaves boot services: from here the machine is ours, the firmware's timer is stopped and its
/// console is gone. Retries while the map changes under us (the firmware may still allocate).
pub fn exit_boot_services(image: Handle, system: &SystemTable) -> Result<(), Status> {
    // SAFETY: boot services are there until this succeeds.
    let boot = unsafe { &*system.boot_services };
    let mut status = Status::ABORTED;
    for _ in 0..4 {
        let mut size = MEMORY_MAP_SIZE;
        let mut key = 0;
        let mut descriptor_size = 0;
        let mut version = 0;
        // The buffer is ours and `size` says how big it is.
        status = (boot.get_memory_map)(
            &mut size,
            (&raw mut MEMORY_MAP).cast(),
            &mut key,
            &mut descriptor_size,
            &mut version,
        );
        if status.is_error() {
            continue;
        }
        // Our image handle and the key of the map just read.
        status = (boot.exit_boot_services)(image, key);
        if !status.is_error() {
            return Ok(());
        }
    }
    Err(status)
}
