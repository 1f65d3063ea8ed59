//! The outside world: programs, processes, files, QEMU.

pub mod cargo;
pub mod cloud_hypervisor;
pub mod console;
pub mod files;
pub mod firecracker;
#[cfg(test)]
pub mod gdb;
pub mod guest;
pub mod idle;
#[cfg(test)]
pub mod libvirt;
pub mod netns;
pub mod process;
pub mod qemu;
pub mod tools;
