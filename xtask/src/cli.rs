//! The command line: subcommands and their options.

use std::ffi::OsString;

use anyhow::{Context, Result, bail};

use crate::bench::{BenchOptions, DEFAULT_VMS};
use crate::formats::Format;
use crate::qemu::Bus;

pub const USAGE: &str = "\
cargo xtask: build, boot and test the 512-byte VM

USAGE:
    cargo xtask <COMMAND> [OPTIONS]

COMMANDS:
    image   Build the VM and write target/images/512-byte-vm.<ext> and SHA256SUMS
    run     Build the VM and boot it in QEMU (Ctrl-C to stop)
    test    Build the images and run every test, boot tests in QEMU included
    disasm  Print the boot sector's annotated disassembly (--rom: the ROM's)
    bench   Measure boot latency, idle CPU, density, size and build time
            (--quick: within a minute; --vms N: VMs at once for density [default: 32])
    help    Print this help

OPTIONS (image, run):
    -m, --message TEXT   The line the VM prints (printable ASCII) [default: Hello World!]
    -f, --format LIST    image: formats to write, comma-separated, or `all` [default: raw]
                         run: the one format to boot [default: raw]
    --bus BUS            run: the disk (or CD) controller: ide (pc), ahci (q35),
                         virtio-blk, virtio-scsi [default: ide]
                         Formats: raw (the 512-byte sector), img (raw padded to 1 MiB),
                         qcow2, vmdk, vdi, vhd, iso
";

/// The message a plain build prints.
pub const DEFAULT_MESSAGE: &str = "Hello World!";

/// What to build: shared by `image` and `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    pub message: String,
    pub formats: Vec<Format>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions { message: DEFAULT_MESSAGE.to_string(), formats: vec![Format::Raw] }
    }
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Help,
    Image(ImageOptions),
    Run(ImageOptions, Bus),
    Test,
    Disasm { rom: bool },
    Bench(BenchOptions),
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let command = match parser.next()? {
        None => return Ok(Command::Help),
        Some(Value(command)) => command.string()?,
        Some(Long("help") | Short('h')) => return Ok(Command::Help),
        Some(other) => bail!("{}; a command comes first\n\n{USAGE}", other.unexpected()),
    };
    let takes_image_options = matches!(command.as_str(), "image" | "run");
    let mut options = ImageOptions::default();
    let mut rom = false;
    let mut bus = Bus::Ide;
    let mut bench = BenchOptions::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return Ok(Command::Help),
            Long("message") | Short('m') if takes_image_options => {
                options.message = parser
                    .value()?
                    .into_string()
                    .map_err(|_| anyhow::anyhow!("--message must be printable ASCII text"))?;
            }
            Long("format") | Short('f') if takes_image_options => {
                let list = parser.value()?.string()?;
                options.formats = Format::parse_list(&list)?;
                if command == "run" && options.formats.len() != 1 {
                    bail!("`run` boots one format; got `{list}`");
                }
            }
            Long("rom") if command == "disasm" => rom = true,
            Long("bus") if command == "run" => {
                let name = parser.value()?.string()?;
                bus = Bus::ALL.into_iter().find(|b| b.name() == name).with_context(|| {
                    let names: Vec<_> = Bus::ALL.iter().map(|b| b.name()).collect();
                    format!("unknown bus `{name}`; valid buses: {}", names.join(", "))
                })?;
            }
            Long("quick") if command == "bench" => bench.quick = true,
            Long("vms") if command == "bench" => {
                let text = parser.value()?.string()?;
                bench.vms = match text.parse::<usize>() {
                    Ok(n @ 1..=256) => n,
                    _ => bail!(
                        "--vms takes a number of VMs from 1 to 256 (default {DEFAULT_VMS}); got `{text}`"
                    ),
                };
            }
            other => {
                return Err(other.unexpected())
                    .with_context(|| format!("`cargo xtask {command}`: see `cargo xtask help`"));
            }
        }
    }
    Ok(match command.as_str() {
        "image" => Command::Image(options),
        "run" => Command::Run(options, bus),
        "test" => Command::Test,
        "disasm" => Command::Disasm { rom },
        "bench" => Command::Bench(bench),
        "help" => Command::Help,
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_command_prints_help() {
        assert_eq!(parse_str(&[]).unwrap(), Command::Help);
        assert_eq!(parse_str(&["--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn image_takes_a_message() {
        assert_eq!(parse_str(&["image"]).unwrap(), Command::Image(ImageOptions::default()));
        let parsed = parse_str(&["image", "--message", "Booted OK"]).unwrap();
        let expected = ImageOptions { message: "Booted OK".into(), ..ImageOptions::default() };
        assert_eq!(parsed, Command::Image(expected));
    }

    #[test]
    fn image_takes_a_format_list_and_run_takes_one_format() {
        let Command::Image(options) = parse_str(&["image", "--format", "qcow2,iso"]).unwrap()
        else {
            panic!("not an image command");
        };
        assert_eq!(options.formats, vec![Format::Qcow2, Format::Iso]);
        let Command::Run(options, bus) =
            parse_str(&["run", "-f", "vhd", "--bus", "virtio-scsi"]).unwrap()
        else {
            panic!("not a run command");
        };
        assert_eq!((options.formats, bus), (vec![Format::Vhd], Bus::VirtioScsi));
        let error = format!("{:#}", parse_str(&["run", "--bus", "scsi"]).unwrap_err());
        assert!(error.contains("valid buses: ide, ahci, virtio-blk, virtio-scsi"), "{error}");
        let error = parse_str(&["run", "--format", "raw,iso"]).unwrap_err().to_string();
        assert!(error.contains("boots one format"), "{error}");
        let error = format!("{:#}", parse_str(&["image", "--format", "vhdx"]).unwrap_err());
        assert!(error.contains("valid formats: raw, img"), "{error}");
    }

    #[test]
    fn unknown_commands_and_options_are_refused() {
        let error = parse_str(&["imagine"]).unwrap_err().to_string();
        assert!(error.contains("unknown command `imagine`"), "{error}");
        let error = format!("{:#}", parse_str(&["image", "--colour"]).unwrap_err());
        assert!(error.contains("--colour"), "{error}");
        assert!(parse_str(&["test", "--message", "x"]).is_err());
        assert!(parse_str(&["image", "--message"]).is_err());
    }
}
