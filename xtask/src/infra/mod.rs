//! The outside world: programs, processes, files, QEMU.

pub mod cargo;
pub mod console;
pub mod files;
#[cfg(test)]
pub mod gdb;
pub mod idle;
pub mod process;
pub mod qemu;
pub mod tools;
