//! `cargo xtask run`: build the image and boot it in QEMU for a person to watch.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cli::ImageOptions;
use crate::qemu::{self, Accel, Bus, VmConfig};
use crate::{image, images_dir};

pub fn run(options: &ImageOptions) -> Result<()> {
    // Say what is missing before building anything.
    let qemu = qemu::binary()?;
    let written = image::build_images(options, &images_dir())?;
    let (format, path) = written.first().context("no format to boot")?;

    let mut config = VmConfig::disk(path);
    config.boot = format.boot(Bus::Ide);
    config.window = has_display();
    let accel = match config.accel {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG software emulation (no usable /dev/kvm)",
    };
    if config.window {
        println!("booting in a QEMU window with {accel}; COM1 is shown here too.");
        println!("To quit: close the window, or press Ctrl-C here.");
    } else {
        println!("booting in QEMU with {accel}, no display found: COM1 is shown below.");
        println!("To quit: press Ctrl-C.");
    }
    println!("----");
    // COM1 goes straight to this terminal (QEMU's stdout).
    let status = Command::new(qemu).args(config.args()).status().context("starting QEMU")?;
    if !status.success() && status.code().is_some() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

/// A graphical display to open a window on.
fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}
