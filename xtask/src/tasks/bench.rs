//! `cargo xtask bench [--quick] [--vms N]`: boot latency, idle CPU, density, size and build time,
//! measured in one run and written to `target/bench/report.md` and `report.json`.
//!
//! Benchmarks are not tests: they never fail on a missed target, they report it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::domain::artifacts::{self, ImageOptions};
use crate::domain::formats::Format;
use crate::domain::image::{self, DEFAULT_MESSAGE, thousands};
use crate::domain::pvh;
use crate::infra::files::{project_root, target_dir};
use crate::infra::process;
use crate::infra::qemu::{self, Accel, Bus, Firmware, IdleCost, Vm, VmConfig, cpu_shares};
use crate::infra::tools::{self, Tool};
use crate::tasks::bench_net;

/// What `--quick` and `--vms` ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    pub quick: bool,
    pub vms: usize,
    /// Only the net family's figures (`--net`).
    pub net: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { quick: false, vms: DEFAULT_VMS, net: false }
    }
}

/// VMs started at once for the density figure.
pub const DEFAULT_VMS: usize = 64;
/// The targets the report is read against: each image within this much of a paused VM (a share
/// of one core, and wake-ups per second), all density VMs idling together under DENSITY_IDLE.
const IDLE_CPU_MARGIN: f64 = 0.0005;
const IDLE_WAKEUP_MARGIN: f64 = 1.0;
const DENSITY_IDLE_TARGET: f64 = 0.01;
const DENSITY_TARGET: Duration = Duration::from_secs(3);
/// How long idle costs are measured after the message.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const QUICK_IDLE_WINDOW: Duration = Duration::from_secs(5);
const ROM_RATIO_TARGET: f64 = 0.4;
/// How long one VM may take to print before the benchmark gives up on it.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// Median, minimum and maximum of some durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
    pub runs: usize,
}

impl Stats {
    pub fn of(samples: &[Duration]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let n = sorted.len();
        assert!(n > 0, "no samples");
        let median =
            if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2 };
        Stats { median, min: sorted[0], max: sorted[n - 1], runs: n }
    }
}

impl Stats {
    /// As JSON: milliseconds and the number of runs.
    pub fn json(self) -> String {
        format!(
            r#"{{"median_ms": {:.3}, "min_ms": {:.3}, "max_ms": {:.3}, "runs": {}}}"#,
            self.median.as_secs_f64() * 1000.0,
            self.min.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0,
            self.runs
        )
    }
}

/// An idle cost as JSON.
pub fn cost_json(c: IdleCost) -> String {
    format!(r#"{{"core_share": {:.6}, "wakeups_per_second": {:.2}}}"#, c.cpu, c.wakeups)
}

/// Boot latency of both images under one accelerator.
struct Latency {
    accel: Accel,
    boot_sector: Stats,
    rom: Stats,
}

impl Latency {
    fn ratio(&self) -> f64 {
        self.rom.median.as_secs_f64() / self.boot_sector.median.as_secs_f64()
    }
}

/// Idle costs of the boot sector, the ROM, the UEFI program and a paused VM (`-S`, the floor)
/// under one accelerator, measured together.
struct Idle {
    accel: Accel,
    boot_sector: IdleCost,
    rom: IdleCost,
    /// The UEFI program under OVMF, or why it was not measured.
    uefi: Result<IdleCost, String>,
    paused: IdleCost,
}

impl Idle {
    /// Whether `image` costs at most the floor plus the margins.
    fn at_floor(&self, image: IdleCost) -> bool {
        image.cpu <= self.paused.cpu + IDLE_CPU_MARGIN
            && image.wakeups <= self.paused.wakeups + IDLE_WAKEUP_MARGIN
    }
}

/// The PVH kernel under one accelerator: QEMU start to the line on `microvm` (its own firmware)
/// and on `pc` (SeaBIOS first), beside a stub that prints with its first instructions on
/// `microvm` (the floor: QEMU's own start-up); and its idle cost beside a paused microvm.
struct Kernel {
    accel: Accel,
    microvm: Stats,
    pc: Stats,
    stub: Stats,
    idle_microvm: IdleCost,
    idle_pc: IdleCost,
    paused: IdleCost,
}

impl Kernel {
    /// The kernel's median on microvm over the stub's.
    fn ratio(&self) -> f64 {
        self.microvm.median.as_secs_f64() / self.stub.median.as_secs_f64()
    }
}

/// From the PVH kernel's line (its first act) to the end of its set-up.
const KERNEL_SETTLE: Duration = Duration::from_secs(2);
/// The PVH kernel on microvm within this factor of the first-instruction stub.
const KERNEL_RATIO_TARGET: f64 = 1.2;

/// N VMs at once.
struct Density {
    accel: Accel,
    /// "boot sector", "ROM" or "UEFI program".
    image: &'static str,
    vms: usize,
    all_printed: Duration,
    idle_total: f64,
    mean_rss_kib: u64,
}

/// The machine the figures come from.
struct Machine {
    cpu: String,
    cores: usize,
    kvm: bool,
    qemu: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map_or("unknown CPU".to_string(), |(_, name)| name.trim().to_string());
        let qemu = qemu::version().unwrap_or_default();
        Machine {
            cpu,
            cores: thread::available_parallelism().map_or(1, |n| n.get()),
            kvm: qemu::kvm_usable().is_ok(),
            qemu,
        }
    }

    fn describe(&self) -> String {
        let kvm = if self.kvm { "KVM usable" } else { "no KVM (TCG only)" };
        format!("{}, {} cores, {kvm}; {}", self.cpu, self.cores, self.qemu)
    }
}

pub fn run(options: &BenchOptions) -> Result<()> {
    Accel::choose()?;
    tools::require(&[Tool::Qemu, Tool::QemuImg, Tool::Ovmf])?;
    let started = Instant::now();
    let machine = Machine::read();
    println!("benchmarking on {}", machine.describe());
    let out_dir = target_dir().join("bench");
    let images = out_dir.join("images");
    let all = ImageOptions::everything();
    let sector = artifacts::build(&all, &images)?.sector;
    if options.net {
        let net = bench_net::run(options, &images)?;
        net.write()?;
        println!("\n{}", net.markdown());
        println!(
            "wrote {} in {:.1} s",
            out_dir.join("net.md").display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let raw = artifacts::artifact_path(&images, "raw");
    let rom = artifacts::artifact_path(&images, "rom");
    let img = artifacts::artifact_path(&images, "img");
    let [ovmf, ..] = tools::ovmf_files()?;
    let runs = if options.quick { 5 } else { 20 };
    let uefi_line = qemu::uefi_line(DEFAULT_MESSAGE);

    // 1. Latency: QEMU start to the message on COM1.
    let mut latencies = Vec::new();
    for accel in qemu::available_accels() {
        // Nested or slow KVM can take seconds per SeaBIOS boot: fewer runs there when quick.
        let runs = if options.quick && accel == Accel::Kvm { 3 } else { runs };
        println!("latency under {}: {runs} boots of each image", accel.name());
        let boot_sector = Stats::of(&boot_times(&sector_config(&raw, accel), runs)?);
        let rom = Stats::of(&boot_times(&rom_config(&rom, accel), runs)?);
        latencies.push(Latency { accel, boot_sector, rom });
    }

    // 2. Idle: one VM of each image after its message, and a paused VM as the floor, side by
    // side, under each accelerator.
    let window = if options.quick { QUICK_IDLE_WINDOW } else { IDLE_WINDOW };
    let mut idle = Vec::new();
    for accel in qemu::available_accels() {
        println!("idle CPU and wake-ups over {window:?} ({}), with a paused VM", accel.name());
        let paused = VmConfig { extra: vec!["-S".into()], ..sector_config(&raw, accel) };
        let mut vms = qemu::start_all(&[
            sector_config(&raw, accel),
            rom_config(&rom, accel),
            paused,
            uefi_config(&img, &ovmf, accel),
        ])?;
        qemu::wait_all_for(&mut vms[..2], b"\r\n", BOOT_TIMEOUT)?;
        // The UEFI program is measured where OVMF runs: not under this machine's nested KVM,
        // where OVMF stops with a KVM internal error before printing (see shared NOTES).
        let mut uefi = vms.pop().context("the UEFI VM")?;
        let uefi_up = match uefi.wait_for(uefi_line.as_bytes(), UEFI_TIMEOUT) {
            Ok(_) => {
                thread::sleep(UEFI_SETTLE);
                Ok(())
            }
            Err(error) => Err(why_uefi_did_not_print(&mut uefi, &error)),
        };
        if uefi_up.is_ok() {
            vms.push(uefi);
        }
        let costs = qemu::idle_costs(&mut vms, window)?;
        idle.push(Idle {
            accel,
            boot_sector: costs[0],
            rom: costs[1],
            paused: costs[2],
            uefi: uefi_up.map(|()| costs[3]),
        });
    }

    // 3. The PVH kernel: latency against the stub, and idle, under each accelerator.
    let kernel = artifacts::artifact_path(&images, "pvh");
    let stub = out_dir.join("first-instruction-stub.pvh");
    fs::create_dir_all(&out_dir)?;
    fs::write(&stub, pvh::first_instruction_stub(uefi_line.as_bytes()))?;
    let mut kernels = Vec::new();
    for accel in qemu::available_accels() {
        let pc_runs = if options.quick && accel == Accel::Kvm { 3 } else { runs };
        println!(
            "PVH kernel under {}: {runs} boots on microvm (and of the stub), {pc_runs} on pc",
            accel.name()
        );
        let on = |path: &Path, machine: &str| VmConfig {
            accel,
            machine: machine.into(),
            ..Format::Pvh.vm_config(path, Bus::Ide)
        };
        let line = uefi_line.as_bytes();
        let microvm = Stats::of(&boot_times_to(&on(&kernel, "microvm"), line, runs)?);
        let stub = Stats::of(&boot_times_to(&on(&stub, "microvm"), line, runs)?);
        let pc = Stats::of(&boot_times_to(&on(&kernel, "pc"), line, pc_runs)?);
        let paused = VmConfig { extra: vec!["-S".into()], ..on(&kernel, "microvm") };
        let mut vms = qemu::start_all(&[on(&kernel, "microvm"), on(&kernel, "pc"), paused])?;
        qemu::wait_all_for(&mut vms[..2], line, BOOT_TIMEOUT)?;
        // The kernel prints first and reads the ACPI tables after: idle is measured from there.
        thread::sleep(KERNEL_SETTLE);
        let costs = qemu::idle_costs(&mut vms, window)?;
        kernels.push(Kernel {
            accel,
            microvm,
            pc,
            stub,
            idle_microvm: costs[0],
            idle_pc: costs[1],
            paused: costs[2],
        });
    }

    // 4. Density: N VMs started at once, under TCG (the accelerator every host has).
    let mut densities = Vec::new();
    let n = options.vms;
    println!("density: {n} VMs at once (tcg), boot sector, ROM, then (not --quick) UEFI");
    densities.push(density("boot sector", &sector_config(&raw, Accel::Tcg), b"\r\n", n, window)?);
    densities.push(density("ROM", &rom_config(&rom, Accel::Tcg), b"\r\n", n, window)?);
    let on_microvm = VmConfig { accel: Accel::Tcg, ..Format::Pvh.vm_config(&kernel, Bus::Ide) };
    densities.push(density("PVH kernel (microvm)", &on_microvm, uefi_line.as_bytes(), n, window)?);
    if !options.quick {
        let uefi = uefi_config(&img, &ovmf, Accel::Tcg);
        densities.push(density("UEFI program", &uefi, uefi_line.as_bytes(), n, window)?);
    }

    // 5. The net family: leases, round trips, idle with a card, a farm on one bridge.
    let net = bench_net::run(options, &images)?;
    net.write()?;

    // 6. Incremental `cargo xtask image`: nothing changed, then one source file touched.
    println!("incremental image builds");
    let raw_only = ImageOptions::default();
    let quiet_dir = out_dir.join("incremental");
    let unchanged = timed(|| artifacts::build(&raw_only, &quiet_dir).map(drop))?;
    touch(&project_root().join("src").join("lib.rs"))?;
    let touched = timed(|| artifacts::build(&raw_only, &quiet_dir).map(drop))?;

    let report = Report {
        machine,
        latencies,
        idle,
        kernels,
        densities,
        sector,
        images,
        unchanged,
        touched,
        options: options.clone(),
    };
    fs::create_dir_all(&out_dir)?;
    let markdown = format!("{}\n{}", report.markdown(), net.markdown());
    fs::write(out_dir.join("report.md"), markdown.as_bytes())?;
    fs::write(out_dir.join("report.json"), report.json().as_bytes())?;
    println!("\n{markdown}");
    println!(
        "wrote {} and report.json in {:.1} s",
        out_dir.join("report.md").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The boot sector from disk on IDE (`pc`), through SeaBIOS.
fn sector_config(raw: &Path, accel: Accel) -> VmConfig {
    VmConfig { accel, ..Format::Raw.vm_config(raw, Bus::Ide) }
}

/// The ROM as `-bios` (`pc`), from the reset vector.
fn rom_config(rom: &Path, accel: Accel) -> VmConfig {
    VmConfig { accel, ..Format::Rom.vm_config(rom, Bus::Ide) }
}

/// The UEFI program from the disk on IDE (`pc`), under OVMF.
fn uefi_config(img: &Path, ovmf: &Path, accel: Accel) -> VmConfig {
    VmConfig { accel, ..Format::Img.vm_config(img, Bus::Ide) }
        .under_uefi(Firmware::Uefi { image: ovmf.to_path_buf() })
}

/// How long OVMF may take to the UEFI program's line.
const UEFI_TIMEOUT: Duration = Duration::from_secs(30);
/// From the line OVMF copies off the console to the program's own, after ExitBootServices.
const UEFI_SETTLE: Duration = Duration::from_secs(1);

/// Why the UEFI VM never printed, for the report: QEMU's run state tells a KVM internal error
/// (OVMF under this machine's nested KVM) from a slow or failed boot.
fn why_uefi_did_not_print(vm: &mut Vm, error: &anyhow::Error) -> String {
    let stopped = vm.qmp("query-status").is_ok() && vm.qmp_log().contains("internal-error");
    if stopped {
        "not measured: OVMF stopped with a KVM internal error before printing".into()
    } else {
        let first = error.to_string();
        format!("not measured: {}", first.lines().next().unwrap_or_default())
    }
}

/// Boots `config` `runs` times, one after another; each sample is QEMU start to message.
fn boot_times(config: &VmConfig, runs: usize) -> Result<Vec<Duration>> {
    boot_times_to(config, b"\r\n", runs)
}

/// As [`boot_times`], to `line` on COM1.
fn boot_times_to(config: &VmConfig, line: &[u8], runs: usize) -> Result<Vec<Duration>> {
    (0..runs)
        .map(|_| {
            let mut vm = Vm::start(config)?;
            vm.wait_for(line, BOOT_TIMEOUT)
        })
        .collect()
}

/// `n` VMs of `config` started at once: the time until each has printed `line`, then their
/// idle CPU together over `window`.
fn density(
    image: &'static str,
    config: &VmConfig,
    line: &[u8],
    n: usize,
    window: Duration,
) -> Result<Density> {
    let start = Instant::now();
    let mut vms = qemu::start_all(&vec![config.clone(); n])?;
    qemu::wait_all_for(&mut vms, line, BOOT_TIMEOUT)?;
    let all_printed = start.elapsed();
    if config.firmware != Firmware::Bios {
        thread::sleep(UEFI_SETTLE);
    }
    let idle_total = cpu_shares(&mut vms, window)?.iter().sum();
    let rss: Vec<u64> =
        vms.iter().map(|vm| process::resident_kib(vm.pid())).collect::<Result<_>>()?;
    Ok(Density {
        accel: config.accel,
        image,
        vms: n,
        all_printed,
        idle_total,
        mean_rss_kib: rss.iter().sum::<u64>() / n as u64,
    })
}

fn timed(work: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    work()?;
    Ok(start.elapsed())
}

/// Sets a file's modification time to now, as `touch` does.
fn touch(path: &Path) -> Result<()> {
    let file = fs::File::options()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.set_modified(std::time::SystemTime::now())?;
    Ok(())
}

struct Report {
    machine: Machine,
    latencies: Vec<Latency>,
    idle: Vec<Idle>,
    kernels: Vec<Kernel>,
    densities: Vec<Density>,
    sector: image::Image,
    images: PathBuf,
    unchanged: Duration,
    touched: Duration,
    options: BenchOptions,
}

/// A duration in milliseconds, one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

impl Report {
    fn file_sizes(&self) -> Vec<(Format, u64)> {
        Format::ALL
            .iter()
            .filter_map(|&f| {
                fs::metadata(artifacts::artifact_path(&self.images, f.extension()))
                    .ok()
                    .map(|m| (f, m.len()))
            })
            .collect()
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# 512-byte VM benchmark\n");
        let _ = writeln!(md, "Machine: {}.", m.describe());
        let mode = if self.options.quick { " --quick" } else { "" };
        let _ = writeln!(md, "Run: `cargo xtask bench{mode}`.\n");

        let _ = writeln!(md, "## Boot latency: QEMU start to the message on COM1\n");
        let _ = writeln!(md, "| accelerator | image | median | min | max | runs |");
        let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: |");
        for l in &self.latencies {
            for (name, s) in [
                ("boot sector (SeaBIOS, IDE)", l.boot_sector),
                ("ROM (reset vector, -bios)", l.rom),
            ] {
                let _ = writeln!(
                    md,
                    "| {} | {name} | {} | {} | {} | {} |",
                    l.accel.name(),
                    ms(s.median),
                    ms(s.min),
                    ms(s.max),
                    s.runs
                );
            }
        }
        let _ = writeln!(md);
        for l in &self.latencies {
            let _ = writeln!(
                md,
                "- {}: ROM / boot sector = {:.2} (target <= {ROM_RATIO_TARGET}: {})",
                l.accel.name(),
                l.ratio(),
                verdict(l.ratio() <= ROM_RATIO_TARGET)
            );
        }

        let window = if self.options.quick { QUICK_IDLE_WINDOW } else { IDLE_WINDOW };
        let _ = writeln!(
            md,
            "\n## Idle: one VM after its message, and a paused VM (-S), over {window:?}\n"
        );
        let _ = writeln!(
            md,
            "| accelerator | image | CPU (% of a core) | wake-ups per second | at the paused VM's floor |"
        );
        let _ = writeln!(md, "| --- | --- | ---: | ---: | --- |");
        for i in &self.idle {
            for (name, cost) in [
                ("boot sector", Ok(i.boot_sector)),
                ("ROM", Ok(i.rom)),
                ("UEFI program (OVMF)", i.uefi.clone()),
                ("paused VM (floor)", Ok(i.paused)),
            ] {
                let floor = name.starts_with("paused");
                let _ = match cost {
                    Ok(cost) => writeln!(
                        md,
                        "| {} | {name} | {:.3}% | {:.1} | {} |",
                        i.accel.name(),
                        cost.cpu * 100.0,
                        cost.wakeups,
                        if floor { "-" } else { verdict(i.at_floor(cost)) }
                    ),
                    Err(why) => writeln!(md, "| {} | {name} | - | - | {why} |", i.accel.name()),
                };
            }
        }
        let _ = writeln!(
            md,
            "\nTarget: each image within {:.2}% of a core and {IDLE_WAKEUP_MARGIN} wake-up per second of \
             the paused VM.",
            IDLE_CPU_MARGIN * 100.0
        );

        let _ = writeln!(md, "\n## The PVH kernel (QEMU -kernel)\n");
        let _ = writeln!(md, "| accelerator | run | median | min | max | runs |");
        let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: |");
        for k in &self.kernels {
            for (name, s) in [
                ("PVH kernel, microvm", k.microvm),
                ("first-instruction stub, microvm (floor)", k.stub),
                ("PVH kernel, pc (SeaBIOS first)", k.pc),
            ] {
                let _ = writeln!(
                    md,
                    "| {} | {name} | {} | {} | {} | {} |",
                    k.accel.name(),
                    ms(s.median),
                    ms(s.min),
                    ms(s.max),
                    s.runs
                );
            }
        }
        let _ = writeln!(md);
        for k in &self.kernels {
            let fastest = self
                .latencies
                .iter()
                .filter(|l| l.accel == k.accel)
                .all(|l| k.microvm.median < l.boot_sector.median.min(l.rom.median));
            let _ = writeln!(
                md,
                "- {}: kernel on microvm / stub = {:.2} (target <= {KERNEL_RATIO_TARGET}: {}); \
                 faster than the boot sector and the ROM: {}; idle on microvm {:.3}% and {:.1} \
                 wake-ups/s, on pc {:.3}% and {:.1}/s, paused microvm {:.3}% and {:.1}/s (at the \
                 floor: {})",
                k.accel.name(),
                k.ratio(),
                verdict(k.ratio() <= KERNEL_RATIO_TARGET),
                if fastest { "yes" } else { "no" },
                k.idle_microvm.cpu * 100.0,
                k.idle_microvm.wakeups,
                k.idle_pc.cpu * 100.0,
                k.idle_pc.wakeups,
                k.paused.cpu * 100.0,
                k.paused.wakeups,
                verdict(
                    [k.idle_microvm, k.idle_pc]
                        .iter()
                        .all(|c| c.cpu <= k.paused.cpu + IDLE_CPU_MARGIN
                            && c.wakeups <= k.paused.wakeups + IDLE_WAKEUP_MARGIN)
                )
            );
        }

        let _ = writeln!(md, "\n## Density: VMs started at once\n");
        let _ = writeln!(
            md,
            "| accelerator | image | VMs | all printed after | total idle CPU | mean RSS per QEMU |"
        );
        let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: |");
        for d in &self.densities {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2}% of a core | {} KiB |",
                d.accel.name(),
                d.image,
                d.vms,
                ms(d.all_printed),
                d.idle_total * 100.0,
                thousands(d.mean_rss_kib)
            );
        }
        let _ = writeln!(md);
        for d in &self.densities {
            let _ = writeln!(
                md,
                "- {}, {}: {} VMs all printing within {DENSITY_TARGET:?} on {} cores: {}; idle together \
                 {:.2}% of a core (target < {:.0}%: {})",
                d.accel.name(),
                d.image,
                d.vms,
                m.cores,
                verdict(d.all_printed <= DENSITY_TARGET),
                d.idle_total * 100.0,
                DENSITY_IDLE_TARGET * 100.0,
                verdict(d.idle_total < DENSITY_IDLE_TARGET)
            );
        }

        let s = &self.sector;
        let _ = writeln!(md, "\n## Size\n");
        let _ = writeln!(
            md,
            "Boot sector: {} bytes of code, {} of message, {} free ({} characters of room); {} \
             partition type bytes, {} for the protective partition entry and 2 for the signature.\n",
            s.code_bytes(),
            s.message_bytes(),
            s.free_bytes(),
            s.message_room(),
            s.reserved.len(),
            s.partition_entry_bytes()
        );
        let _ = writeln!(md, "| artifact | bytes | original bundle |");
        let _ = writeln!(md, "| --- | ---: | ---: |");
        for (format, size) in self.file_sizes() {
            let original = format.original_size().map_or("-".to_string(), thousands);
            let _ = writeln!(md, "| {} | {} | {original} |", format.name(), thousands(size));
        }

        let _ = writeln!(md, "\n## Incremental `cargo xtask image` (raw)\n");
        let _ = writeln!(md, "- nothing changed: {}", ms(self.unchanged));
        let _ = writeln!(md, "- after touching src/lib.rs: {}", ms(self.touched));
        md
    }

    fn json(&self) -> String {
        let idle: Vec<String> = self
            .idle
            .iter()
            .map(|i| {
                format!(
                    r#"{{"accelerator": "{}", "boot_sector": {}, "rom": {}, "uefi": {}, "paused": {}}}"#,
                    i.accel.name(),
                    cost_json(i.boot_sector),
                    cost_json(i.rom),
                    i.uefi.clone().map_or("null".to_string(), cost_json),
                    cost_json(i.paused)
                )
            })
            .collect();
        let latency: Vec<String> = self
            .latencies
            .iter()
            .map(|l| {
                format!(
                    r#"{{"accelerator": "{}", "boot_sector": {}, "rom": {}, "rom_to_boot_sector_ratio": {:.4}}}"#,
                    l.accel.name(),
                    l.boot_sector.json(),
                    l.rom.json(),
                    l.ratio()
                )
            })
            .collect();
        let kernels: Vec<String> = self
            .kernels
            .iter()
            .map(|k| {
                format!(
                    r#"{{"accelerator": "{}", "microvm": {}, "stub": {}, "pc": {}, "microvm_to_stub_ratio": {:.4}, "idle_microvm": {}, "idle_pc": {}, "paused": {}}}"#,
                    k.accel.name(),
                    k.microvm.json(),
                    k.stub.json(),
                    k.pc.json(),
                    k.ratio(),
                    cost_json(k.idle_microvm),
                    cost_json(k.idle_pc),
                    cost_json(k.paused)
                )
            })
            .collect();
        let density: Vec<String> = self
            .densities
            .iter()
            .map(|d| {
                format!(
                    r#"{{"accelerator": "{}", "image": "{}", "vms": {}, "all_printed_ms": {:.3}, "idle_total_core_share": {:.5}, "mean_rss_kib": {}}}"#,
                    d.accel.name(),
                    d.image,
                    d.vms,
                    d.all_printed.as_secs_f64() * 1000.0,
                    d.idle_total,
                    d.mean_rss_kib
                )
            })
            .collect();
        let files: Vec<String> = self
            .file_sizes()
            .iter()
            .map(|(f, size)| {
                let original = f.original_size().map_or("null".to_string(), |o| o.to_string());
                format!(
                    r#"{{"format": "{}", "bytes": {size}, "original_bytes": {original}}}"#,
                    f.name()
                )
            })
            .collect();
        let m = &self.machine;
        format!(
            concat!(
                "{{\n",
                r#"  "machine": {{"cpu": {}, "cores": {}, "kvm": {}, "qemu": {}}},"#,
                "\n  \"quick\": {},\n",
                "  \"latency\": [{}],\n",
                r#"  "idle": [{}],"#,
                "\n  \"pvh\": [{}],",
                "\n  \"density\": [{}],\n",
                r#"  "size": {{"code": {}, "message": {}, "free": {}, "files": [{}]}},"#,
                "\n",
                r#"  "incremental_image_ms": {{"unchanged": {:.1}, "touched": {:.1}}}"#,
                "\n}}\n"
            ),
            json_string(&m.cpu),
            m.cores,
            m.kvm,
            json_string(&m.qemu),
            self.options.quick,
            latency.join(", "),
            idle.join(", "),
            kernels.join(", "),
            density.join(", "),
            self.sector.code_bytes(),
            self.sector.message_bytes(),
            self.sector.free_bytes(),
            files.join(", "),
            self.unchanged.as_secs_f64() * 1000.0,
            self.touched.as_secs_f64() * 1000.0,
        )
    }
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_middle() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let s = Stats::of(&ms(&[30, 10, 20]));
        assert_eq!(
            (s.median, s.min, s.max, s.runs),
            (Duration::from_millis(20), Duration::from_millis(10), Duration::from_millis(30), 3)
        );
        assert_eq!(Stats::of(&ms(&[10, 40, 20, 30])).median, Duration::from_millis(25));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string(r#"Intel "Xeon" \ 2"#), r#""Intel \"Xeon\" \\ 2""#);
        assert_eq!(json_string("tab\there"), r#""tab\u0009here""#);
    }
}
