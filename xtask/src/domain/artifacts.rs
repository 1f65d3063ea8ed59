//! The artifact set: `512-byte-vm.<ext>` for each format asked for, and `SHA256SUMS` listing
//! exactly those files. A set is built whole or not at all: every file is written into a staging
//! directory beside the destination, which then takes the destination's place in one rename. A
//! lock on the parent directory serialises concurrent builds; a failed or interrupted build
//! leaves the previous set as it was (and removes its staging directory).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::Digest;

use crate::domain::formats::{self, DISK_SIZE, Family, Format};
use crate::domain::gpt::PartitionKind;
use crate::domain::image::{self, Image, SECTOR_SIZE, thousands};
use crate::domain::loader::Loader;
use crate::domain::{container_disk, efi, fat, gpt, iso, pvh, reproducible, vhdx, vmdk};
use crate::infra::cargo;
use crate::infra::files::{self, Scratch};
use crate::infra::tools::{self, Tool};

/// Base name of every artifact: `target/images/512-byte-vm.<ext>`.
pub const ARTIFACT_STEM: &str = "512-byte-vm";
/// The checksum file beside the artifacts.
pub const CHECKSUMS: &str = "SHA256SUMS";

/// Environment variable that moves the artifacts away from `target/images` (the tests of `run`
/// use it so as not to touch the user's images).
pub const IMAGES_DIR_ENV: &str = "VM512_IMAGES_DIR";

/// Where the artifacts go: `target/images/512-byte-vm.<ext>`.
pub fn images_dir() -> PathBuf {
    std::env::var_os(IMAGES_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| files::target_dir().join("images"))
}

/// Where `run` builds what it boots: beside the images (`target/run`), never in them, so that
/// `run` leaves the set `image` built as it was.
pub fn run_dir() -> PathBuf {
    images_dir().with_file_name("run")
}

/// What to build: shared by `image`, `run`, `test` and `bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    pub message: String,
    pub formats: Vec<Format>,
    /// The families to build those formats in (each only in the formats it comes in).
    pub families: Vec<Family>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            message: image::DEFAULT_MESSAGE.to_string(),
            formats: vec![Format::Raw],
            families: vec![Family::Classic],
        }
    }
}

impl ImageOptions {
    /// Every format of both families.
    pub fn everything() -> ImageOptions {
        ImageOptions {
            formats: Format::ALL.to_vec(),
            families: Family::ALL.to_vec(),
            ..ImageOptions::default()
        }
    }

    /// The formats to build in `family`.
    pub fn formats_of(&self, family: Family) -> Vec<Format> {
        match self.families.contains(&family) {
            true => self.formats.iter().copied().filter(|&f| family.has(f)).collect(),
            false => Vec::new(),
        }
    }

    /// Refuses a request for a format the only family asked for does not come in.
    pub fn check(&self) -> Result<()> {
        if let [family] = self.families[..]
            && let Some(format) = self.formats.iter().find(|&&f| !family.has(f))
        {
            let names: Vec<_> = family.formats().iter().map(|f| f.name()).collect();
            anyhow::bail!(
                "the {} family has no {} format; it comes in {}",
                family.stem(),
                format.name(),
                names.join(", ")
            );
        }
        Ok(())
    }
}

/// A set that was built.
pub struct Built {
    /// The boot sector with its message, for the size report.
    pub sector: Image,
    /// The UEFI program's size.
    pub efi_bytes: usize,
    /// The PVH kernel's size.
    pub pvh_bytes: usize,
    /// Each format with its file, in the order of [`Format::ALL`].
    pub artifacts: Vec<(Format, PathBuf)>,
    /// The net family's programs' sizes (UEFI, PVH), and its files.
    pub net_efi_bytes: usize,
    pub net_pvh_bytes: usize,
    pub net_artifacts: Vec<(Format, PathBuf)>,
    pub dir: PathBuf,
}

/// Builds the images with the options' message and replaces `dir` with a set holding each
/// requested format as `512-byte-vm.<ext>` and `SHA256SUMS`.
pub fn build(options: &ImageOptions, dir: &Path) -> Result<Built> {
    // Refuse bad input and missing tools before spending time on the build.
    image::validate_message(&options.message)?;
    options.check()?;
    let classic_formats = options.formats_of(Family::Classic);
    let net_formats = options.formats_of(Family::Net);
    let needs_qemu_img = |f: &Format| f.qemu_img_args().is_some() || *f == Format::ContainerDisk;
    let qemu_img = match classic_formats.iter().chain(&net_formats).any(needs_qemu_img) {
        true => {
            tools::require(&[Tool::QemuImg])?;
            Some(tools::path(Tool::QemuImg)?)
        }
        false => None,
    };
    let elfs = cargo::build_elfs()?;
    let mut sector = image::read_boot_sector(&elfs.boot_sector)?;
    sector.set_message(&options.message)?;
    sector.check_boot_sector()?;
    let mut rom = image::read_rom(&elfs.rom)?;
    rom.set_message(&options.message)?;
    let pe = fs::read(&elfs.efi).with_context(|| format!("reading {}", elfs.efi.display()))?;
    let mut efi = Image::efi_from_pe(pe).with_context(|| format!("{}", elfs.efi.display()))?;
    efi.set_message(&options.message)?;
    efi::check_size(&efi.bytes)?;
    let elf = fs::read(&elfs.pvh).with_context(|| format!("reading {}", elfs.pvh.display()))?;
    let mut kernel = Image::pvh_from_elf(elf).with_context(|| format!("{}", elfs.pvh.display()))?;
    kernel.set_message(&options.message)?;
    let pe =
        fs::read(&elfs.net_efi).with_context(|| format!("reading {}", elfs.net_efi.display()))?;
    let mut net_efi =
        Image::efi_from_pe(pe).with_context(|| format!("{}", elfs.net_efi.display()))?;
    net_efi.set_message(&options.message)?;
    efi::check_net_size(&net_efi.bytes, "the net UEFI program")?;
    let elf =
        fs::read(&elfs.net_pvh).with_context(|| format!("reading {}", elfs.net_pvh.display()))?;
    let mut net_kernel =
        Image::pvh_from_elf(elf).with_context(|| format!("{}", elfs.net_pvh.display()))?;
    net_kernel.set_message(&options.message)?;
    efi::check_net_size(&net_kernel.bytes, "the net PVH kernel")?;
    // Every disk's content: the GUIDs and the volume ID come from what the disk carries.
    let seed: [u8; 32] =
        sha2::Sha256::new().chain_update(&sector.bytes).chain_update(&efi.bytes).finalize().into();
    let volume_id = |seed: &[u8; 32], at: usize| {
        u32::from_le_bytes(seed[at..at + 4].try_into().expect("4 bytes"))
    };
    let disk = |size: u64| -> Result<Vec<u8>> {
        let sectors = size / SECTOR_SIZE as u64;
        let (first, last) = gpt::esp_range(sectors);
        let esp =
            fat::volume(&efi.bytes, (last - first + 1) as u32, first as u32, volume_id(&seed, 0))?;
        gpt::disk(&sector.bytes, &esp, sectors, &seed)
    };
    let cd = || -> Result<Vec<u8>> {
        let sectors = fat::sectors_for(&efi.bytes);
        let esp = fat::volume(&efi.bytes, sectors, 0, volume_id(&seed, 4))?;
        Ok(iso::build(&sector.bytes, &esp))
    };
    let classic = Contents {
        family: Family::Classic,
        disk: &disk,
        cd: &cd,
        file: &|format| match format {
            Format::Raw => Some(&sector.bytes),
            Format::Rom => Some(&rom.bytes),
            Format::Efi => Some(&efi.bytes),
            Format::Pvh => Some(&kernel.bytes),
            _ => None,
        },
    };
    // The net family's disks: the loader in sector 0, the kernel in the BIOS boot partition
    // for BIOS machines, the UEFI program on the ESP.
    let loader = Loader::from_elf(&read_file(&elfs.loader)?)?;
    let net_seed: [u8; 32] = sha2::Sha256::new()
        .chain_update(&net_kernel.bytes)
        .chain_update(&net_efi.bytes)
        .finalize()
        .into();
    let net_disk = |size: u64| -> Result<Vec<u8>> {
        let sectors = size / SECTOR_SIZE as u64;
        let ((bios_first, bios_last), (esp_first, esp_last)) = gpt::net_ranges(sectors);
        let esp_sectors = (esp_last - esp_first + 1) as u32;
        let esp =
            fat::volume(&net_efi.bytes, esp_sectors, esp_first as u32, volume_id(&net_seed, 0))?;
        let sector0 = loader.for_disk(&net_kernel.bytes, bios_first)?;
        let partitions = [
            gpt::Partition {
                kind: PartitionKind::Esp,
                first: esp_first,
                last: esp_last,
                bytes: &esp,
            },
            gpt::Partition {
                kind: PartitionKind::BiosBoot,
                first: bios_first,
                last: bios_last,
                bytes: &net_kernel.bytes,
            },
        ];
        gpt::partitioned(&sector0, &partitions, sectors, &net_seed)
    };
    let net_cd = || -> Result<Vec<u8>> {
        let sectors = fat::sectors_for(&net_efi.bytes);
        let esp = fat::volume(&net_efi.bytes, sectors, 0, volume_id(&net_seed, 4))?;
        Ok(iso::build(&loader.cd_boot_image(&net_kernel.bytes)?, &esp))
    };
    let net = Contents {
        family: Family::Net,
        disk: &net_disk,
        cd: &net_cd,
        file: &|format| match format {
            Format::Efi => Some(&net_efi.bytes),
            Format::Pvh => Some(&net_kernel.bytes),
            _ => None,
        },
    };

    let parent = dir.parent().context("the images directory has no parent")?;
    let name = dir.file_name().context("the images directory has no name")?.to_string_lossy();
    let _lock = files::lock(parent)?;
    remove_stale_staging(parent, &name);
    let staging = Scratch::at(parent.join(format!(".{name}.staging-{}", std::process::id())))?;
    let epoch = reproducible::source_date_epoch()?;
    type Written = Vec<(Format, PathBuf)>;
    let write_set = || -> Result<(Written, Written)> {
        let tools = (qemu_img.as_deref(), epoch);
        let artifacts = write_family(&classic, &classic_formats, &staging, dir, tools)?;
        let net_artifacts = write_family(&net, &net_formats, &staging, dir, tools)?;
        write_checksums(staging.path())?;
        Ok((artifacts, net_artifacts))
    };
    // A failed write says why in plain words where the disk is full or not writable.
    let (artifacts, net_artifacts) =
        write_set().map_err(|error| match files::why_writes_fail(parent) {
            Some(why) => error.context(format!("{why}; {} was left as it was", dir.display())),
            None => error,
        })?;
    files::replace_dir(staging.path(), dir)?;
    Ok(Built {
        sector,
        efi_bytes: efi.bytes.len(),
        pvh_bytes: kernel.bytes.len(),
        artifacts,
        net_efi_bytes: net_efi.bytes.len(),
        net_pvh_bytes: net_kernel.bytes.len(),
        net_artifacts,
        dir: dir.to_path_buf(),
    })
}

/// What one family's artifacts are made of.
struct Contents<'a> {
    family: Family,
    /// The raw disk of `size` bytes (its sector 0, GPT and partitions).
    disk: &'a dyn Fn(u64) -> Result<Vec<u8>>,
    /// The CD.
    cd: &'a dyn Fn() -> Result<Vec<u8>>,
    /// The formats that are one file as built (raw, rom, efi, pvh).
    file: &'a dyn Fn(Format) -> Option<&'a Vec<u8>>,
}

/// Writes `formats` of one family into `staging`, named for `dir`; `tools` is qemu-img (where
/// a format needs it) and SOURCE_DATE_EPOCH.
fn write_family(
    contents: &Contents,
    formats: &[Format],
    staging: &Scratch,
    dir: &Path,
    (qemu_img, epoch): (Option<&Path>, Option<u64>),
) -> Result<Vec<(Format, PathBuf)>> {
    let family = contents.family;
    let disk = contents.disk;
    let mut artifacts = Vec::new();
    // The qcow2's bytes, for the containerDisk (built into staging if not asked for).
    let mut qcow2: Option<Vec<u8>> = None;
    for &format in formats {
        let file = family.file_name(format);
        let path = staging.join(&file);
        match format {
            _ if (contents.file)(format).is_some() => {
                write(&path, (contents.file)(format).expect("checked"))?
            }
            Format::Img => write(&path, &disk(DISK_SIZE)?)?,
            Format::Iso => write(&path, &(contents.cd)()?)?,
            Format::Vmdk => {
                let disk = disk(DISK_SIZE)?;
                let digest: [u8; 32] = sha2::Sha256::digest(&disk).into();
                let cid = reproducible::vmdk_cid(&digest);
                write(&path, &vmdk::monolithic_sparse(&disk, &file, cid))?
            }
            Format::Vhdx => {
                let disk = disk(DISK_SIZE)?;
                let digest: [u8; 32] = sha2::Sha256::digest(&disk).into();
                write(&path, &vhdx::dynamic(&disk, &digest))?
            }
            Format::ContainerDisk => {
                let disk = match qcow2.take() {
                    Some(bytes) => bytes,
                    None => {
                        let qemu_img = qemu_img.expect("checked above");
                        let temporary = staging.join("disk.qcow2");
                        let input = disk(DISK_SIZE)?;
                        convert(qemu_img, Format::Qcow2, &input, &temporary, epoch)?;
                        let bytes = fs::read(&temporary)?;
                        fs::remove_file(&temporary)?;
                        bytes
                    }
                };
                let name = family.file_name(Format::Qcow2);
                let archive = container_disk::build(&disk, &name, epoch.unwrap_or(0))?;
                write(&path, &archive)?;
            }
            _ => {
                let qemu_img = qemu_img.expect("checked above");
                let input = disk(format.virtual_size().expect("a disk format"))?;
                convert(qemu_img, format, &input, &path, epoch)?;
                if format == Format::Qcow2 {
                    qcow2 = Some(fs::read(&path)?);
                }
            }
        }
        artifacts.push((format, dir.join(file)));
    }
    Ok(artifacts)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Converts the raw `disk` with qemu-img into `format` at `path`, and makes the result
/// reproducible (identifiers from the content, timestamps from `epoch`).
fn convert(
    qemu_img: &Path,
    format: Format,
    disk: &[u8],
    path: &Path,
    epoch: Option<u64>,
) -> Result<()> {
    // qemu-img reads a file: the raw disk, beside the output, removed after.
    let input = path.with_extension("input.raw");
    write(&input, disk)?;
    let converted = formats::convert(qemu_img, format, &input, path);
    fs::remove_file(&input)?;
    converted?;
    let mut bytes = fs::read(path)?;
    let seed: [u8; 32] = sha2::Sha256::digest(disk).into();
    reproducible::settle(format, &mut bytes, &seed, epoch)?;
    write(path, &bytes)
}

/// Staging directories that a killed build left (the lock is held: no build is using them).
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}.staging-");
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes `dir/SHA256SUMS` (the `sha256sum -c` format) for every artifact in `dir`, the
/// classic family's first.
pub fn write_checksums(dir: &Path) -> Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut lines = String::new();
    for family in Family::ALL {
        for &format in family.formats() {
            let file = family.file_name(format);
            let path = dir.join(&file);
            if !path.exists() {
                continue;
            }
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let hex: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            lines.push_str(&format!("{hex}  {file}\n"));
        }
    }
    let path = dir.join(CHECKSUMS);
    write(&path, lines.as_bytes())?;
    Ok(path)
}

/// `dir/512-byte-vm.<ext>`.
pub fn artifact_path(dir: &Path, extension: &str) -> PathBuf {
    dir.join(format!("{ARTIFACT_STEM}.{extension}"))
}

impl Built {
    /// Where the sector's bytes go, and each file beside the original NASM release bundle.
    pub fn report(&self) -> String {
        let s = &self.sector;
        let mut out = format!(
            "boot sector: {SECTOR_SIZE} bytes = {} code + {} message (\"{}\" + CR LF + end mark) \
             + {} free ({} characters of room) + {} partition-slot type bytes (kept 0) + {} protective partition \
             entry + 2 signature\n",
            s.code_bytes(),
            s.message_bytes(),
            String::from_utf8_lossy(&s.message()),
            s.free_bytes(),
            s.message_room(),
            s.reserved.len(),
            s.partition_entry_bytes(),
        );
        out += &format!(
            "UEFI program (BOOTX64.EFI): {} bytes (limit {})\n",
            thousands(self.efi_bytes as u64),
            thousands(efi::SIZE_LIMIT as u64)
        );
        out += &format!(
            "PVH kernel (512-byte-vm.pvh): {} bytes (target {})\n",
            thousands(self.pvh_bytes as u64),
            thousands(pvh::SIZE_TARGET as u64)
        );
        if !self.net_artifacts.is_empty() {
            out += &format!(
                "net family: UEFI program {} bytes, PVH kernel {} bytes (limit {} each)\n",
                thousands(self.net_efi_bytes as u64),
                thousands(self.net_pvh_bytes as u64),
                thousands(efi::NET_SIZE_LIMIT as u64)
            );
        }
        out += &format!("{:<32} {:>11}  {:>15}\n", "artifact", "bytes", "original bundle");
        for (format, path) in self.artifacts.iter().chain(&self.net_artifacts) {
            let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let original = format.original_size().map_or("-".to_string(), thousands);
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            out += &format!("{name:<32} {:>11}  {original:>15}\n", thousands(size));
        }
        out += &format!(
            "in {} (with {CHECKSUMS}: exactly these files; every one rebuilds bit for bit)\n",
            self.dir.display()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_cover_the_artifacts_present_in_sha256sum_format() {
        let dir = Scratch::new("sums").unwrap();
        fs::write(artifact_path(dir.path(), "raw"), b"abc").unwrap();
        fs::write(artifact_path(dir.path(), "iso"), b"").unwrap();
        let sums = fs::read_to_string(write_checksums(dir.path()).unwrap()).unwrap();
        assert_eq!(
            sums,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  512-byte-vm.raw\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  512-byte-vm.iso\n"
        );
    }
}
