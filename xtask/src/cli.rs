//! The command line: subcommands, their options and their help. It knows the tasks; the tasks
//! never know the command line.

use std::ffi::OsString;

use anyhow::{Context, Result, bail};

use crate::domain::artifacts::ImageOptions;
use crate::domain::formats::{Family, Format};
use crate::domain::image::DEFAULT_MESSAGE;
use crate::infra::qemu::Bus;
use crate::tasks::bench::{BenchOptions, DEFAULT_VMS};
use crate::tasks::run::{RunOptions, Vmm};

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// The general help, or one command's.
    Help(Option<String>),
    Image(ImageOptions),
    Run(RunOptions),
    /// Run the tests whose names contain the filter (every test without one).
    Test {
        filter: Option<String>,
    },
    Disasm {
        rom: bool,
    },
    /// The release bundle.
    Dist,
    Bench(BenchOptions),
}

/// The command line, parsed.
#[derive(Debug, PartialEq)]
pub struct Flags {
    pub command: Command,
    /// `--no-install`: never offer to install a missing tool.
    pub no_install: bool,
}

const COMMANDS: [&str; 7] = ["image", "run", "test", "disasm", "bench", "dist", "help"];

/// The QEMU machines `run --machine` boots the PVH kernel on.
pub const PVH_MACHINES: [&str; 3] = ["microvm", "pc", "q35"];

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Flags> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let help = |command: &str| {
        Ok(Flags { command: Command::Help(Some(command.into())), no_install: false })
    };
    let command = match parser.next()? {
        None | Some(Long("help") | Short('h')) => {
            return Ok(Flags { command: Command::Help(None), no_install: false });
        }
        Some(Value(command)) => command.string()?,
        Some(other) => {
            bail!("{}; a command comes first: {}", other.unexpected(), COMMANDS.join(", "))
        }
    };
    if !COMMANDS.contains(&command.as_str()) {
        bail!(
            "unknown command `{command}`; the commands are {}: see `cargo xtask help`",
            COMMANDS.join(", ")
        );
    }
    let takes_image_options = matches!(command.as_str(), "image" | "run");
    let takes_no_install = matches!(command.as_str(), "image" | "run" | "test" | "bench" | "dist");
    let mut message = DEFAULT_MESSAGE.to_string();
    let mut formats: Vec<Format> = Vec::new();
    let mut format_lists: Vec<String> = Vec::new();
    let mut rom = false;
    let mut bus = None;
    let mut uefi = false;
    let mut machine = None;
    let mut vmm = Vmm::Qemu;
    let mut bench = BenchOptions::default();
    let mut no_install = false;
    let mut net = false;
    let mut topic = None;
    let mut filter = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("help") | Short('h') => return help(&command),
            Value(name) if command == "help" && topic.is_none() => {
                let name = name.string()?;
                if !COMMANDS.contains(&name.as_str()) {
                    bail!("no help for `{name}`: the commands are {}", COMMANDS.join(", "));
                }
                topic = Some(name);
            }
            Long("message") | Short('m') if takes_image_options => {
                message = option_value(&mut parser, "--message")?
                    .into_string()
                    .map_err(|_| anyhow::anyhow!("--message must be printable ASCII text"))?;
            }
            Long("format") | Short('f') if takes_image_options => {
                let list = option_value(&mut parser, "--format")?.string()?;
                formats.extend(Format::parse_list(&list)?);
                format_lists.push(list);
            }
            Long("no-install") if takes_no_install => no_install = true,
            Long("net") if takes_image_options => net = true,
            Long("rom") if command == "disasm" => rom = true,
            Long("bus") if command == "run" => {
                let name = option_value(&mut parser, "--bus")?.string()?;
                bus = Some(Bus::ALL.into_iter().find(|b| b.name() == name).with_context(|| {
                    let names: Vec<_> = Bus::ALL.iter().map(|b| b.name()).collect();
                    format!("unknown bus `{name}`; valid buses: {}", names.join(", "))
                })?);
            }
            Long("uefi") if command == "run" => uefi = true,
            Long("machine") if command == "run" => {
                let name = option_value(&mut parser, "--machine")?.string()?;
                if !PVH_MACHINES.contains(&name.as_str()) {
                    bail!("unknown machine `{name}`; valid machines: {}", PVH_MACHINES.join(", "));
                }
                machine = Some(name);
            }
            Long("vmm") if command == "run" => {
                let name = option_value(&mut parser, "--vmm")?.string()?;
                vmm = Vmm::parse(&name)?;
            }
            Value(name) if command == "test" && filter.is_none() => filter = Some(name.string()?),
            Long("quick") if command == "bench" => bench.quick = true,
            Long("net") if command == "bench" => bench.net = true,
            Long("vms") if command == "bench" => {
                let text = option_value(&mut parser, "--vms")?.string()?;
                bench.vms = match text.parse::<usize>() {
                    Ok(n @ 1..=256) => n,
                    _ => bail!(
                        "--vms takes a number of VMs from 1 to 256 (default {DEFAULT_VMS}); got `{text}`"
                    ),
                };
            }
            other => {
                return Err(other.unexpected()).with_context(|| {
                    format!("`cargo xtask {command}`: see `cargo xtask help {command}`")
                });
            }
        }
    }
    formats.sort();
    formats.dedup();
    if formats.is_empty() {
        formats.push(Format::Raw);
    }
    // `all` means both families; `--net` the net family alone (by default its PVH kernel; with
    // `all`, each format it comes in).
    let all_asked = format_lists.iter().any(|list| list.split(',').any(|n| n.trim() == "all"));
    if net && format_lists.is_empty() {
        formats = vec![Format::Pvh];
    } else if net && all_asked {
        formats.retain(|&f| Family::Net.has(f));
    }
    let families = match (net, all_asked) {
        (true, _) => vec![Family::Net],
        (false, true) => Family::ALL.to_vec(),
        (false, false) => vec![Family::Classic],
    };
    let image = ImageOptions { message, formats, families };
    image.check()?;
    let command = match command.as_str() {
        "image" => Command::Image(image),
        "run" => {
            if image.formats.len() != 1 {
                bail!("`run` boots one format; got `{}`: pick one", format_lists.join("` and `"));
            }
            Command::Run(RunOptions {
                format: image.formats[0],
                message: image.message,
                bus,
                uefi,
                machine,
                vmm,
                net,
            })
        }
        "test" => Command::Test { filter },
        "disasm" => Command::Disasm { rom },
        "dist" => Command::Dist,
        "bench" => Command::Bench(bench),
        _ => Command::Help(topic),
    };
    Ok(Flags { command, no_install })
}

/// The value of an option that takes one. A value that is a separate word and looks like an
/// option (`image -m -f`) is refused: the user forgot the value. Attach it to print such a
/// text anyway: `--message=-f`.
fn option_value(parser: &mut lexopt::Parser, option: &str) -> Result<OsString> {
    if let Some(attached) = parser.optional_value() {
        return Ok(attached);
    }
    let value = parser.value().with_context(|| format!("{option} needs a value"))?;
    let text = value.to_string_lossy();
    if text.starts_with('-') && text.len() > 1 {
        bail!(
            "{option} needs a value, but `{text}` follows it; to pass that text, write {option}={text}"
        );
    }
    Ok(value)
}

/// The general help.
pub fn usage() -> String {
    format!(
        "\
cargo xtask: build, boot and test the 512-byte VM

USAGE:
    cargo xtask <COMMAND> [OPTIONS]
    cargo xtask help <COMMAND>      a command's options

COMMANDS:
    image   Build target/images/512-byte-vm.<ext> for each format, and SHA256SUMS
    run     Build one format and boot it in QEMU (Ctrl-C presses the power button)
    test    Build every format and run every test, boot tests in QEMU included
    disasm  Print the boot sector's annotated disassembly (--rom: the ROM's)
    bench   Measure boot latency, idle CPU, density, size and build time
    dist    Write the release bundle, target/dist/512-byte-vm-<version>.tar
    help    Print this help, or a command's

{}
A missing QEMU or qemu-img is named with its package; where this user can install it (root or
password-less sudo, apt-get or dnf), the xtask asks first on a terminal, installs without asking
when CI is set, and never with --no-install (or VM512_NO_INSTALL=1).
VM512_ACCEL=kvm or tcg forces the accelerator; by default KVM when /dev/kvm is usable.
",
        formats_table()
    )
}

/// One command's help.
pub fn command_help(command: &str, message_room: Option<usize>) -> String {
    let room = match message_room {
        Some(n) => format!("up to {n} characters in this build"),
        None => "as many characters as the sector has room for (at least 32)".to_string(),
    };
    let message = format!(
        "    -m, --message TEXT  The line the VM prints: printable ASCII (space to ~), {room}
                        [default: {DEFAULT_MESSAGE}]"
    );
    let no_install =
        "    --no-install        Never offer to install a missing tool; only name its package";
    match command {
        "image" => format!(
            "\
cargo xtask image [OPTIONS]

Builds the VM and replaces target/images with a new set: 512-byte-vm.<ext> for each format asked
for and SHA256SUMS, which lists exactly those files. A failed or interrupted build leaves the
previous set whole; concurrent builds wait for each other.

OPTIONS:
{message}
    -f, --format LIST   Formats, comma-separated, or `all` (every format of both
                        families); may be repeated [default: raw]
    --net               The net family (512-byte-vm-net.<ext>: DHCP, ping, HTTP) alone, in
                        the formats it comes in: every one but raw and rom
                        [default with --net: pvh]
{no_install}

{}",
            formats_table()
        ),
        "run" => format!(
            "\
cargo xtask run [OPTIONS]

Builds one format and boots it in QEMU: in a window (GTK or SDL) when a display is reachable,
otherwise in this terminal with COM1 on stdout and the keyboard on COM1. KVM when /dev/kvm is
usable, TCG otherwise (VM512_ACCEL overrides). Ctrl-C presses the ACPI power button and waits up
to 5 s for the VM to power off; a second Ctrl-C stops QEMU. Exits non-zero if QEMU had to be
stopped or failed.

OPTIONS:
{message}
    -f, --format FORMAT The one format to boot [default: raw]
    --bus BUS           The disk (or CD) controller: ide (pc), ahci (q35), virtio-blk,
                        virtio-scsi, nvme, lsi, pvscsi, megasas, mptsas, usb-xhci,
                        usb-ehci, floppy [default: ide]; not for rom, which is firmware
    --uefi              Boot under UEFI firmware (OVMF) instead of SeaBIOS: every disk
                        format but raw, and the iso
    --machine MACHINE   For pvh: the QEMU machine, microvm, pc or q35 [default: microvm]
    --vmm VMM           For pvh: qemu, cloud-hypervisor or firecracker (found on PATH;
                        they need /dev/kvm) [default: qemu]
    --net               Boot the net family's kernel on q35 (or --machine pc, or microvm:
                        virtio-net on virtio-mmio) with the machine's default card on
                        QEMU's user networking: it leases
                        10.0.2.15, and its web page is forwarded to a free port here
{no_install}

{}",
            formats_table()
        ),
        "test" => format!(
            "\
cargo xtask test [OPTIONS] [FILTER]

Builds every format into target/test-images (twice, the second from a clean crate, for the
reproducibility test), then runs `cargo test` on the xtask with the boot tests included. Plain
`cargo test` runs the unit tests and lists the boot tests as ignored.

FILTER runs only the tests whose names contain it, as `cargo test FILTER` does (e.g.
`cargo xtask test long_idle`); without it, every test runs.

OPTIONS:
{no_install}
"
        ),
        "disasm" => "\
cargo xtask disasm [--rom]

Prints the boot sector's (or the ROM's) sections, symbols and instructions, and checks that each
instruction runs on a 386.
"
        .to_string(),
        "dist" => format!(
            "\
cargo xtask dist [OPTIONS]

Builds every format into target/dist/images (target/images is left alone) and writes the release
bundle, target/dist/512-byte-vm-<version>.tar: a directory of that name with every artifact,
SHA256SUMS and WHERE-EACH-FILE-GOES.txt. The same sources give the same bytes (every entry is
stamped with SOURCE_DATE_EPOCH, or 0).

OPTIONS:
{no_install}
"
        ),
        "bench" => format!(
            "\
cargo xtask bench [OPTIONS]

Measures boot latency, idle CPU (the boot sector, the ROM and the UEFI program beside a paused VM),
density, size and build time; writes target/bench/report.md and report.json.

OPTIONS:
    --quick             Fewer runs, shorter windows, no UEFI density: about 90 s on 2 cores
    --net               Only the net family's figures (time to the lease under SeaBIOS, OVMF
                        and PVH, ping round trip, idle with a card, 32 VMs on one bridge);
                        writes target/bench/net.md and net.json
    --vms N             VMs started at once for the density figure, 1 to 256 [default: {DEFAULT_VMS}]
{no_install}
"
        ),
        _ => usage(),
    }
}

/// The formats, what each is, and the buses `run --bus` boots it from.
fn formats_table() -> String {
    let mut table = String::from(
        "FORMATS (and the buses `run --bus` boots each from; `cargo xtask help run` lists the buses):\n",
    );
    for format in Format::ALL {
        let names: Vec<_> = format.buses().iter().map(|b| b.name()).collect();
        let buses = match (format, format.buses()) {
            (Format::Rom, _) => "none: booted as -bios".to_string(),
            (Format::Efi, _) => "none: copy it into an ESP".to_string(),
            (Format::Pvh, _) => "none: a kernel (run --machine, --vmm)".to_string(),
            (_, []) => "none: push it to a registry".to_string(),
            (_, all) if all == Bus::ALL => "every bus".to_string(),
            (_, cd) if cd == Bus::CD_DRIVES => "every bus with a CD drive".to_string(),
            _ => names.join(", "),
        };
        table += &format!("    {:<13} {:<50} {buses}\n", format.name(), format.description());
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command> {
        parse(args.iter().map(OsString::from)).map(|flags| flags.command)
    }

    fn error(args: &[&str]) -> String {
        format!("{:#}", parse_str(args).unwrap_err())
    }

    #[test]
    fn no_command_prints_help() {
        assert_eq!(parse_str(&[]).unwrap(), Command::Help(None));
        assert_eq!(parse_str(&["--help"]).unwrap(), Command::Help(None));
    }

    #[test]
    fn each_command_has_its_own_help() {
        assert_eq!(parse_str(&["help", "image"]).unwrap(), Command::Help(Some("image".into())));
        assert_eq!(parse_str(&["image", "--help"]).unwrap(), Command::Help(Some("image".into())));
        assert_eq!(parse_str(&["run", "-h"]).unwrap(), Command::Help(Some("run".into())));
        assert!(error(&["help", "imagine"]).contains("no help for `imagine`"));
        let image = command_help("image", Some(49));
        assert!(image.contains("up to 49 characters"), "{image}");
        assert!(image.contains("rom           64 KiB"), "the formats list names rom: {image}");
        assert!(image.contains("efi           the UEFI program"), "{image}");
        let run = command_help("run", None);
        assert!(
            run.contains("raw           the bare 512-byte sector")
                && run.contains(" ide, floppy\n"),
            "{run}"
        );
        assert!(usage().contains("with a CD drive\n"), "{}", usage());
    }

    #[test]
    fn image_takes_a_message() {
        assert_eq!(parse_str(&["image"]).unwrap(), Command::Image(ImageOptions::default()));
        let parsed = parse_str(&["image", "--message", "Booted OK"]).unwrap();
        let expected = ImageOptions { message: "Booted OK".into(), ..ImageOptions::default() };
        assert_eq!(parsed, Command::Image(expected));
    }

    #[test]
    fn all_builds_both_families_and_net_picks_the_net_family() {
        let Command::Image(all) = parse_str(&["image", "--format", "all"]).unwrap() else {
            panic!("not an image command")
        };
        assert_eq!(all, ImageOptions::everything());
        let Command::Image(net) = parse_str(&["image", "--net"]).unwrap() else {
            panic!("not an image command")
        };
        assert_eq!((net.formats, net.families), (vec![Format::Pvh], vec![Family::Net]));
        let Command::Image(net) = parse_str(&["image", "--net", "-f", "all"]).unwrap() else {
            panic!("not an image command")
        };
        assert_eq!(net.formats, Format::NET.to_vec());
        let Command::Image(one) = parse_str(&["image", "-f", "pvh"]).unwrap() else {
            panic!("not an image command")
        };
        assert_eq!(one.families, vec![Family::Classic]);
        let refused = error(&["image", "--net", "-f", "rom"]);
        assert!(refused.contains("512-byte-vm-net family has no rom format"), "{refused}");
        assert!(refused.contains("iso, efi, containerdisk, pvh"), "{refused}");
        let Command::Run(run) = parse_str(&["run", "--net"]).unwrap() else {
            panic!("not a run command")
        };
        assert!(run.net && run.format == Format::Pvh);
    }

    #[test]
    fn a_missing_value_is_not_taken_from_the_next_option() {
        assert!(error(&["image", "-m", "-f", "iso"]).contains("--message needs a value"));
        assert!(error(&["image", "--format", "--message", "x"]).contains("--format needs a value"));
        let Command::Image(options) = parse_str(&["image", "--message=-f"]).unwrap() else {
            panic!("not an image command")
        };
        assert_eq!(options.message, "-f");
        assert!(parse_str(&["image", "--message"]).is_err());
    }

    #[test]
    fn image_takes_format_lists_and_merges_repeats() {
        let Command::Image(options) = parse_str(&["image", "--format", "qcow2,iso"]).unwrap()
        else {
            panic!("not an image command");
        };
        assert_eq!(options.formats, vec![Format::Qcow2, Format::Iso]);
        let Command::Image(options) =
            parse_str(&["image", "-f", "raw", "--format", "iso"]).unwrap()
        else {
            panic!("not an image command");
        };
        assert_eq!(options.formats, vec![Format::Raw, Format::Iso]);
        assert!(error(&["image", "--format", "vhdy"]).contains("valid formats: raw, img"));
    }

    #[test]
    fn run_takes_one_format_and_a_bus() {
        let Command::Run(options) =
            parse_str(&["run", "-f", "vhd", "--bus", "virtio-scsi"]).unwrap()
        else {
            panic!("not a run command");
        };
        assert_eq!((options.format, options.bus), (Format::Vhd, Some(Bus::VirtioScsi)));
        assert!(
            error(&["run", "--bus", "scsi"])
                .contains("valid buses: ide, ahci, virtio-blk, virtio-scsi, nvme")
        );
        assert!(error(&["run", "--format", "raw,iso"]).contains("boots one format"));
        assert!(error(&["run", "--format", "raw", "--format", "iso"]).contains("boots one format"));
    }

    #[test]
    fn run_takes_a_machine_and_a_vmm_for_the_kernel() {
        let Command::Run(options) =
            parse_str(&["run", "-f", "pvh", "--machine", "q35", "--vmm", "firecracker"]).unwrap()
        else {
            panic!("not a run command");
        };
        assert_eq!(options.machine.as_deref(), Some("q35"));
        assert_eq!(options.vmm, Vmm::Firecracker);
        assert!(error(&["run", "--machine", "isapc"]).contains("valid machines: microvm, pc, q35"));
        assert!(error(&["run", "--vmm", "xen"]).contains("qemu, cloud-hypervisor, firecracker"));
    }

    #[test]
    fn unknown_commands_and_options_are_refused() {
        assert!(error(&["imagine"]).contains("unknown command `imagine`"));
        assert!(error(&["image", "--colour"]).contains("--colour"));
        assert!(parse_str(&["test", "--message", "x"]).is_err());
        assert!(parse_str(&["disasm", "--no-install"]).is_err());
        let flags = parse(["test", "--no-install"].map(OsString::from)).unwrap();
        assert!(flags.no_install);
    }
}
