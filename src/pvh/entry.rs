//! What both PVH kernels (the classic one and the net family's) do between the stub and the
//! 64-bit core: read what the loader left, show the message on the screen where there is one.

use vm512::core64::{self, Reach, Service};

/// The stub (`asm/pvh.s`, with a stack of `$stack` bytes) and `pvh_main`, which it calls in
/// long mode with the start info's address and which runs the core with `$service`: all a
/// kernel's root says besides its modules. With `command_line`, `pvh_main` first gives the core
/// the loader's command line (the net family: it names virtio-mmio devices); the classic kernel
/// never reads it.
macro_rules! kernel {
    ($service:ty, stack: $stack:expr $(, $command_line:ident)?) => {
        core::arch::global_asm!(
            include_str!("../asm/pvh.s"),
            serial_init = sym vm512::serial::INIT,
            stack_size = const $stack,
        );

        /// Called by `asm/pvh.s` in long mode, with the start info's physical address.
        #[unsafe(no_mangle)]
        extern "C" fn pvh_main(start_info: u32) -> ! {
            $(
                let $command_line = start_info::at(start_info).map(|info| info.cmdline_paddr);
                vm512::core64::set_command_line($command_line);
            )?
            entry::enter::<$service>(start_info)
        }
    };
}
use vm512::{message, vga};

use crate::{paging, start_info};

/// Where a BIOS leaves the RSDP when the loader names none: a 16-byte boundary in 0xE0000-0xFFFFF.
const BIOS_AREA: core::ops::Range<u64> = 0xE_0000..0x10_0000;

/// The VGA text buffer's address: a screen only where the memory map does not call it RAM.
const VGA_TEXT: u64 = 0xB_8000;

/// Reads the start info at `start_info`, shows the message, and runs the core with `S`.
#[inline(always)]
pub fn enter<S: Service>(start_info: u32) -> ! {
    let info = start_info::at(start_info);
    let rsdp = info.and_then(|info| info.rsdp()).or_else(rsdp_in_bios_area);
    let screen = info.and_then(|info| info.is_ram(VGA_TEXT)) == Some(false) && vga::present();
    if screen {
        let mut screen = vga::Screen::below_the_bios();
        message::for_each_byte(|byte| screen.put(byte));
    }
    core64::run::<Pvh, S>(rsdp)
}

/// Any x86 VMM, with the stub's page tables.
struct Pvh;
impl Reach for Pvh {
    const ANY_MACHINE: bool = true;
    const LINE_PRINTED: bool = true;

    fn map_device(address: u64) -> bool {
        paging::map_device(address)
    }
}

/// "RSD PTR " on a 16-byte boundary in the BIOS area (identity mapped), for loaders that leave
/// `rsdp_paddr` 0.
fn rsdp_in_bios_area() -> Option<u64> {
    BIOS_AREA.step_by(16).find(|&at| {
        // SAFETY: BIOS memory, mapped one to one; read only.
        let bytes = unsafe { core::ptr::with_exposed_provenance::<[u8; 8]>(at as usize).read() };
        &bytes == b"RSD PTR "
    })
}
