//! The images and their formats: what is built, independent of how it is run.

pub mod archive;
pub mod artifacts;
pub mod container_disk;
pub mod dist;
pub mod efi;
pub mod elf;
pub mod fat;
pub mod formats;
pub mod gpt;
pub mod image;
pub mod instructions;
pub mod iso;
pub mod loader;
pub mod pvh;
pub mod reproducible;
pub mod sizes;
pub mod vhdx;
pub mod vmdk;
