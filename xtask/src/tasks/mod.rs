//! One module per `cargo xtask` command.

pub mod bench;
pub mod bench_net;
pub mod disasm;
pub mod dist;
pub mod image;
pub mod run;
pub mod test;
