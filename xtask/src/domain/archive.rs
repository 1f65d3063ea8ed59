//! Tar archives written bit for bit the same on every build: ustar headers that depend only on
//! what is put in (the given mode and owner, one timestamp for every entry), entries in the
//! order they are added. The containerDisk and the release bundle are made of them.

use anyhow::Result;

/// A tar in memory whose headers depend only on what is put in it.
pub struct Archive {
    builder: tar::Builder<Vec<u8>>,
    epoch: u64,
}

impl Archive {
    pub fn new(epoch: u64) -> Archive {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Archive { builder, epoch }
    }

    fn header(&self, kind: tar::EntryType, size: u64, mode: u32, owner: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_mtime(self.epoch);
        header
    }

    pub fn file(&mut self, path: &str, bytes: &[u8], mode: u32, owner: u64) -> Result<()> {
        let mut header = self.header(tar::EntryType::Regular, bytes.len() as u64, mode, owner);
        self.builder.append_data(&mut header, path, bytes)?;
        Ok(())
    }

    pub fn dir(&mut self, path: &str, mode: u32, owner: u64) -> Result<()> {
        let mut header = self.header(tar::EntryType::Directory, 0, mode, owner);
        self.builder.append_data(&mut header, path, std::io::empty())?;
        Ok(())
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        Ok(self.builder.into_inner()?)
    }
}
