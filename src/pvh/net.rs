//! The net family's PVH kernel (`512-byte-vm-net.pvh`): the classic kernel's entry (the same
//! stub and `entry`), then the 64-bit core with the network (`vm512::net`). Its stack is larger:
//! the network stack's calls go deeper than the classic core's.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

mod entry;
mod paging;
mod start_info;

use vm512::net::Network;

core::arch::global_asm!(
    include_str!("../asm/pvh.s"),
    serial_init = sym vm512::serial::INIT,
    stack_size = const 64 * 1024,
);

/// Called by `asm/pvh.s` in long mode, with the start info's physical address.
#[unsafe(no_mangle)]
extern "C" fn pvh_main(start_info: u32) -> ! {
    entry::enter::<Option<Network>>(start_info)
}
