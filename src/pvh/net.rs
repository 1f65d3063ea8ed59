//! The net family's PVH kernel (`512-byte-vm-net.pvh`): the classic kernel's entry (the same
//! stub and `entry`), then the 64-bit core with the network (`vm512::net`). Its stack is larger:
//! the network stack's calls go deeper than the classic core's.

#![no_std]
#![no_main]
#![warn(unsafe_op_in_unsafe_fn)]

#[macro_use]
mod entry;
mod paging;
mod start_info;

// The service: the network (where there is a card) and the guest agent (where there is a
// virtio-console).
use vm512::agent::NetVm as Service;

kernel!(Service, stack: 64 * 1024, command_line);
