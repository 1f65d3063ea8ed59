//! The KubeVirt containerDisk: an OCI image archive (`oci-archive`: the OCI image layout in one
//! tar) whose one layer holds exactly `/disk/512-byte-vm.qcow2`, owned 107:107 (KubeVirt's
//! qemu user) with mode 0440, for linux/amd64. Written here, bit for bit the same on every
//! build: no container runtime, fixed timestamps (`SOURCE_DATE_EPOCH` when set), JSON with a
//! fixed field order.
//!
//! Layout of the archive:
//!
//! | path | what |
//! | --- | --- |
//! | `oci-layout` | `{"imageLayoutVersion": "1.0.0"}` |
//! | `index.json` | the one manifest, tagged `latest` |
//! | `blobs/sha256/<digest>` | the layer (an uncompressed tar), the config, the manifest |

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::domain::archive::Archive;

/// KubeVirt runs QEMU as UID and GID 107 and requires it to read the disk.
pub const DISK_OWNER: u64 = 107;
/// Read-only for the owner and group, as KubeVirt's own containerDisks.
pub const DISK_MODE: u32 = 0o440;
/// Where KubeVirt looks for the disk in the image.
pub const DISK_DIR: &str = "disk";

const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// The archive for `disk` (the qcow2's bytes), stored as `/disk/<name>`. `epoch` stamps every
/// entry (0 when `SOURCE_DATE_EPOCH` is unset).
pub fn build(disk: &[u8], name: &str, epoch: u64) -> Result<Vec<u8>> {
    let layer = layer(disk, name, epoch)?;
    let layer_digest = sha256(&layer);
    let config = format!(
        concat!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"#,
            r#""rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#
        ),
        layer_digest
    );
    let manifest = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"{}","#,
            r#""config":{{"mediaType":"{}","digest":"sha256:{}","size":{}}},"#,
            r#""layers":[{{"mediaType":"{}","digest":"sha256:{}","size":{}}}]}}"#
        ),
        MANIFEST_TYPE,
        CONFIG_TYPE,
        sha256(config.as_bytes()),
        config.len(),
        LAYER_TYPE,
        layer_digest,
        layer.len()
    );
    let index = format!(
        concat!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","#,
            r#""manifests":[{{"mediaType":"{}","digest":"sha256:{}","size":{},"#,
            r#""annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
        ),
        MANIFEST_TYPE,
        sha256(manifest.as_bytes()),
        manifest.len()
    );
    let mut archive = Archive::new(epoch);
    archive.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644, 0)?;
    archive.file("index.json", index.as_bytes(), 0o644, 0)?;
    archive.dir("blobs/", 0o755, 0)?;
    archive.dir("blobs/sha256/", 0o755, 0)?;
    for blob in [&layer[..], config.as_bytes(), manifest.as_bytes()] {
        archive.file(&format!("blobs/sha256/{}", sha256(blob)), blob, 0o644, 0)?;
    }
    archive.finish()
}

/// The one layer: `disk/` and `disk/<name>`, owned 107:107.
fn layer(disk: &[u8], name: &str, epoch: u64) -> Result<Vec<u8>> {
    let mut layer = Archive::new(epoch);
    layer.dir(&format!("{DISK_DIR}/"), 0o555, DISK_OWNER)?;
    layer.file(&format!("{DISK_DIR}/{name}"), disk, DISK_MODE, DISK_OWNER)?;
    layer.finish()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, u64, u64, u32, Vec<u8>)> {
        let mut reader = tar::Archive::new(archive);
        reader
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                let path = entry.path().unwrap().display().to_string();
                (path, header.uid().unwrap(), header.gid().unwrap(), header.mode().unwrap(), bytes)
            })
            .collect()
    }

    #[test]
    fn the_layer_holds_exactly_the_disk_owned_by_107_read_only() {
        let archive = build(b"QFI\xfb disk", "512-byte-vm.qcow2", 0).unwrap();
        let outer = entries(&archive);
        let names: Vec<_> = outer.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(&names[..4], ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]);
        let layer = &outer[4].4;
        let inner = entries(layer);
        assert_eq!(inner.len(), 2);
        assert_eq!((inner[0].0.as_str(), inner[0].1, inner[0].2), ("disk/", 107, 107));
        let disk = &inner[1];
        assert_eq!(
            (disk.0.as_str(), disk.1, disk.2, disk.3),
            ("disk/512-byte-vm.qcow2", 107, 107, 0o440)
        );
        assert_eq!(disk.4, b"QFI\xfb disk");
        // Each blob is named by its digest.
        for (path, _, _, _, bytes) in &outer[4..] {
            assert_eq!(path.strip_prefix("blobs/sha256/").unwrap(), sha256(bytes));
        }
        let config = String::from_utf8(outer[5].4.clone()).unwrap();
        assert!(config.contains(r#""architecture":"amd64","os":"linux""#), "{config}");
    }

    #[test]
    fn the_same_disk_and_epoch_give_the_same_bytes() {
        let a = build(b"disk", "d.qcow2", 1_700_000_000).unwrap();
        assert_eq!(a, build(b"disk", "d.qcow2", 1_700_000_000).unwrap());
        assert_ne!(a, build(b"disk", "d.qcow2", 1_700_000_001).unwrap());
        let mut reader = tar::Archive::new(&a[..]);
        let first = reader.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.header().mtime().unwrap(), 1_700_000_000);
    }
}
