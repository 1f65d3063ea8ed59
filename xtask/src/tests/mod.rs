//! Boot tests: real QEMU, real SeaBIOS, COM1 read back. They need the images `cargo xtask test`
//! builds, so plain `cargo test` lists them as ignored; `cargo xtask test` runs them.

mod abuse;
mod acpi;
mod agent;
mod agent_protocol;
mod boot;
mod dist;
mod gleaning;
mod harness;
mod libvirt;
mod mmio;
mod net;
mod platforms;
mod pvh;
mod robustness;
mod uefi;
mod vmms;
mod web;
