//! What both UEFI programs (the classic one and the net family's) do between the firmware's
//! call and the 64-bit core: the message on the firmware console, the RSDP, ExitBootServices.

use r_efi::efi::{Handle, Status, SystemTable};
use vm512::core64::{self, Reach, Service};
use vm512::message;

use crate::firmware;

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

/// Shows the message, leaves boot services and runs the core with `R`'s reach and `S`.
#[inline(always)]
pub fn enter<R: Reach, S: Service>(image: Handle, system: *mut SystemTable) -> Status {
    // SAFETY: the firmware passes a valid system table.
    let system = unsafe { &*system };
    firmware::print(system, &message_ucs2());
    let rsdp = firmware::rsdp(system);
    if let Err(status) = firmware::exit_boot_services(image, system) {
        // Still the firmware's machine: hand it back, which names the error on its console.
        return status;
    }
    core64::run::<R, S>(rsdp.map(u64::from))
}
