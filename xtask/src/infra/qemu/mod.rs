//! The one QEMU launcher, used by `run`, the boot tests and the benchmarks: the accelerator
//! (`accel`), the disk controllers (`bus`), one run's configuration and command line
//! (`config`), and the running QEMU with its process and QMP (`vm`). A [`Vm`] owns its QEMU
//! process and kills it when dropped, on success, failure or panic alike.

mod accel;
mod bus;
mod config;
mod vm;

pub use accel::*;
pub use bus::*;
pub use config::*;
pub use vm::*;

pub use crate::infra::idle::{IdleCost, cpu_shares, idle_costs};
