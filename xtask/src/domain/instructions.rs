//! The images' disassembly, and the check that every instruction in them runs on the target
//! CPU, a 386. Both use `llvm-objdump` from the `llvm-tools` rustup component, for LLVM's own 16-bit
//! ("code16") decoder.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::infra::{cargo, process};

/// The CPU the target spec names (`"cpu": "i386"`): every instruction must exist on it.
pub const TARGET_CPU: &str = "i386";

/// Mnemonics of the Intel 386 instruction set (integer unit, system instructions) as
/// `llvm-objdump -M intel` spells them. Anything else (CPUID, RDTSC, CMOVcc, BSWAP, CMPXCHG,
/// XADD, MMX/SSE, ...) came later.
const I386_MNEMONICS: &[&str] = &[
    "aaa", "aad", "aam", "aas", "adc", "add", "and", "arpl", "bound", "bsf", "bsr", "bt", "btc",
    "btr", "bts", "call", "calll", "cbw", "cdq", "clc", "cld", "cli", "clts", "cmc", "cmp",
    "cmpsb", "cmpsd", "cmpsw", "cwd", "cwde", "daa", "das", "dec", "div", "enter", "hlt", "idiv",
    "imul", "in", "inc", "insb", "insd", "insw", "int", "int3", "into", "iret", "iretd", "ja",
    "jae", "jb", "jbe", "jcxz", "je", "jecxz", "jg", "jge", "jl", "jle", "jmp", "jne", "jno",
    "jnp", "jns", "jo", "jp", "js", "lahf", "lar", "lcall", "lds", "lea", "leave", "les", "lfs",
    "lgdt", "lgdtw", "lgdtd", "lgs", "lidt", "lidtw", "lidtd", "ljmp", "lldt", "lmsw", "lodsb",
    "lodsd", "lodsw", "loop", "loope", "loopne", "lret", "lsl", "lss", "ltr", "mov", "movsb",
    "movsd", "movsw", "movsx", "movzx", "mul", "neg", "nop", "not", "or", "out", "outsb", "outsd",
    "outsw", "pop", "popal", "popaw", "popfd", "popfw", "popf", "push", "pushal", "pushaw",
    "pushfd", "pushfw", "pushf", "rcl", "rcr", "ret", "retf", "retl", "retw", "rol", "ror", "sahf",
    "sal", "sar", "sbb", "scasb", "scasd", "scasw", "seta", "setae", "setb", "setbe", "sete",
    "setg", "setge", "setl", "setle", "setne", "setno", "setnp", "setns", "seto", "setp", "sets",
    "sgdt", "shl", "shld", "shr", "shrd", "sidt", "sldt", "smsw", "stc", "std", "sti", "stosb",
    "stosd", "stosw", "str", "sub", "test", "verr", "verw", "wait", "xchg", "xlat", "xlatb", "xor",
];

/// Instruction prefixes objdump prints before the mnemonic.
const PREFIXES: &[&str] =
    &["rep", "repe", "repne", "lock", "data16", "addr32", "cs", "ds", "es", "ss", "fs", "gs"];

/// `llvm-objdump` from the toolchain's `llvm-tools` component.
pub fn objdump() -> Result<PathBuf> {
    Ok(cargo::llvm_bin_dir()?.join("llvm-objdump"))
}

/// The disassembly of `elf`'s code as LLVM decodes 16-bit real-mode code: sections, symbols,
/// addresses, bytes and Intel-syntax instructions.
pub fn disassemble(elf: &Path, raw_bytes: bool) -> Result<String> {
    let mut command = Command::new(objdump()?);
    command.args([
        "-d",
        "-C",
        "-M",
        "intel",
        "--triple=i386-unknown-none-code16",
        "--print-imm-hex",
    ]);
    if !raw_bytes {
        command.arg("--no-show-raw-insn");
    }
    let out = process::output(command.arg(elf)).context("running llvm-objdump")?;
    if !out.status.success() {
        bail!("llvm-objdump failed on {}: {}", elf.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The instruction lines of a disassembly without raw bytes, each with its mnemonic (prefixes
/// skipped): `    7c05:      \tcli` gives ("7c05: cli", "cli").
pub fn instructions(listing: &str) -> Vec<(String, &str)> {
    listing
        .lines()
        .filter_map(|line| {
            let (address, instruction) = line.split_once(':')?;
            let address = address.trim();
            if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let mut words = instruction.split_whitespace().skip_while(|w| PREFIXES.contains(w));
            let mnemonic = words.next().unwrap_or("<none>");
            Some((line.split_whitespace().collect::<Vec<_>>().join(" "), mnemonic))
        })
        .collect()
}

/// Lines of a disassembly whose instruction is not a 386 one (or does not decode at all).
pub fn newer_than_target(listing: &str) -> Vec<String> {
    instructions(listing)
        .into_iter()
        .filter(|(_, mnemonic)| !I386_MNEMONICS.contains(mnemonic))
        .map(|(line, _)| line)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_passes_386_code_and_flags_later_instructions() {
        let listing = "\
00007c00 <_start>:
    7c00:      \tljmp\t0x0, 0x7c05
    7c05:      \tcli
    7c06:      \trep\t\tmovsb\tbyte ptr es:[di], byte ptr [si]
    7c08:      \tpushal
    7c0a:      \tcpuid
    7c0c:      \tcmovne\teax, ebx
    7c10:      \tbswap\teax
    7c12:      \t<unknown>
";
        let newer = newer_than_target(listing);
        assert_eq!(newer.len(), 4, "{newer:?}");
        assert!(
            newer[0].contains("cpuid") && newer[1].contains("cmovne") && newer[2].contains("bswap")
        );
        assert!(newer[3].contains("<unknown>"));
    }
}
