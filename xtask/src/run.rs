//! `cargo xtask run`: build the image and boot it in QEMU for a person to watch.
//!
//! Ctrl-C presses the ACPI power button (QMP `system_powerdown`), as `virsh shutdown` would;
//! `run` ends when the VM has powered itself off, and kills QEMU only if it has not within
//! [`GRACE`]. A second Ctrl-C kills at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::ImageOptions;
use crate::qemu::{Accel, Boot, Bus, Console, Vm, VmConfig};
use crate::{image, images_dir, qemu};

/// How long the VM gets to power off after the power button before QEMU is killed.
const GRACE: Duration = Duration::from_secs(5);

/// Ctrl-C presses so far (set by the SIGINT handler).
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

pub fn run(options: &ImageOptions, bus: Bus) -> Result<()> {
    // Say what is missing before building anything.
    qemu::binary()?;
    let written = image::build_images(options, &images_dir())?;
    let (format, path) = written.first().context("no format to boot")?;

    let mut config = VmConfig::boot(path, *format, bus);
    config.window = has_display();
    let accel = match config.accel {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG software emulation (no usable /dev/kvm)",
    };
    let how = match config.boot {
        Boot::Bios => format!("as the firmware (-bios, {})", config.machine),
        _ => format!("on {} ({})", bus.name(), config.machine),
    };
    if config.window {
        println!(
            "booting {} {how} in a QEMU window with {accel}; COM1 is shown here too.",
            format.name()
        );
    } else {
        println!(
            "booting {} {how} in QEMU with {accel}, no display found: COM1 below.",
            format.name()
        );
    }
    println!(
        "To stop: Ctrl-C presses the ACPI power button (graceful shutdown; twice kills QEMU), \
         or type a key and Enter (a key on the console also powers the VM off)."
    );
    println!("----");

    catch_ctrl_c();
    let mut vm = Vm::start_with(&config, Console::Terminal)?;
    let mut pressed: Option<Instant> = None;
    loop {
        if let Some((status, _)) = vm.wait_exit(Duration::from_millis(50))? {
            println!();
            return match (status.success(), vm.guest_shut_down()) {
                (true, true) => {
                    println!("---- the VM powered itself off");
                    Ok(())
                }
                (true, false) => Ok(()),
                (false, _) => bail!("QEMU exited with {status}"),
            };
        }
        match (INTERRUPTS.load(Ordering::SeqCst), pressed) {
            (0, _) => {}
            (1, None) => {
                println!(
                    "\r\n---- power button pressed; waiting up to {GRACE:?} for the VM to power off"
                );
                vm.qmp("system_powerdown")?;
                pressed = Some(Instant::now());
            }
            (_, Some(at)) if at.elapsed() < GRACE && INTERRUPTS.load(Ordering::SeqCst) == 1 => {}
            _ => {
                println!("\r\n---- the VM did not power off: stopping QEMU");
                drop(vm); // kills QEMU
                return Ok(());
            }
        }
    }
}

/// Counts Ctrl-C presses instead of dying, so that the first one can press the power button.
fn catch_ctrl_c() {
    extern "C" fn on_sigint(_signal: i32) {
        INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" {
        /// libc's signal(2) (std links libc on Linux).
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }
    const SIGINT: i32 = 2;
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    unsafe { signal(SIGINT, on_sigint) };
}

/// A graphical display to open a window on.
fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}
