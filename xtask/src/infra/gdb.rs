//! A minimal client for QEMU's GDB stub (`-gdb`): enough to stop the guest at an address and
//! rewrite its registers, so that tests can start the boot sector in the states other BIOSes
//! leave. It speaks the GDB remote serial protocol: `$data#checksum` packets, `+` acks.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// x86 registers as QEMU's x86-64 stub numbers them (its target description, i386-64bit.xml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    Eax = 0,
    Ebx = 1,
    Ecx = 2,
    Edx = 3,
    Esi = 4,
    Edi = 5,
    Ebp = 6,
    Esp = 7,
    Eip = 16,
    Eflags = 17,
    Cs = 18,
    Ss = 19,
    Ds = 20,
    Es = 21,
}

impl Register {
    /// Bytes of the register in the protocol: the general registers and the instruction pointer
    /// are 64-bit in the x86-64 layout, flags and segment selectors 32-bit.
    fn size(self) -> usize {
        if (self as u8) < 17 { 8 } else { 4 }
    }
}

pub struct Gdb {
    stream: UnixStream,
}

impl Gdb {
    /// Connects to the stub QEMU serves on the abstract socket `name` (`-gdb
    /// unix:NAME,abstract=on,...`), retrying while QEMU starts.
    pub fn connect(name: &str) -> Result<Gdb> {
        let stream = crate::infra::qemu::connect(name, || Ok(()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut gdb = Gdb { stream };
        // QEMU answers register reads and writes only to a client that has read the target
        // description.
        gdb.packet("qXfer:features:read:target.xml:0,ffff")?;
        Ok(gdb)
    }

    /// Sends one packet and returns the reply's data.
    pub fn packet(&mut self, data: &str) -> Result<String> {
        let checksum = data.bytes().fold(0u8, |sum, b| sum.wrapping_add(b));
        write!(self.stream, "${data}#{checksum:02x}")?;
        self.reply().with_context(|| format!("GDB packet {data}"))
    }

    /// Reads the next packet, skipping acks, and acknowledges it.
    fn reply(&mut self) -> Result<String> {
        let mut byte = [0u8; 1];
        loop {
            self.stream.read_exact(&mut byte)?;
            match byte[0] {
                b'$' => break,
                b'+' => continue,
                b'-' => bail!("the stub asked for a resend"),
                _ => continue,
            }
        }
        let mut data = Vec::new();
        loop {
            self.stream.read_exact(&mut byte)?;
            if byte[0] == b'#' {
                break;
            }
            data.push(byte[0]);
        }
        let mut checksum = [0u8; 2];
        self.stream.read_exact(&mut checksum)?;
        self.stream.write_all(b"+")?;
        Ok(String::from_utf8_lossy(&data).into_owned())
    }

    /// Runs the guest until it reaches linear address `address`, and leaves it stopped there.
    pub fn run_to(&mut self, address: u32) -> Result<()> {
        self.expect_ok(&format!("Z0,{address:x},1"))?;
        let stop = self.packet("c")?;
        if !stop.starts_with('T') && !stop.starts_with('S') {
            bail!("the guest did not stop at {address:#x}: {stop}");
        }
        self.expect_ok(&format!("z0,{address:x},1"))
    }

    /// Lets the guest run on. (No reply comes until it stops again, which it will not.)
    pub fn resume(&mut self) -> Result<()> {
        self.stream.write_all(b"$c#63")?;
        Ok(())
    }

    pub fn get(&mut self, register: Register) -> Result<u64> {
        let hex = self.packet(&format!("p{:x}", register as u8))?;
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .with_context(|| format!("register {register:?}: {hex:?}"))?;
        Ok(bytes.iter().rev().fold(0u64, |value, &b| value << 8 | b as u64))
    }

    /// Writes `register` and reads it back, so that a write the stub ignored cannot pass.
    pub fn set(&mut self, register: Register, value: u64) -> Result<()> {
        let hex: String =
            value.to_le_bytes()[..register.size()].iter().map(|b| format!("{b:02x}")).collect();
        self.expect_ok(&format!("P{:x}={hex}", register as u8))?;
        let read = self.get(register)?;
        if read != value {
            bail!("{register:?} reads {read:#x} after writing {value:#x}");
        }
        Ok(())
    }

    fn expect_ok(&mut self, data: &str) -> Result<()> {
        match self.packet(data)?.as_str() {
            "OK" => Ok(()),
            other => bail!("GDB packet {data}: {other:?}"),
        }
    }
}
