//! `cargo xtask dist`: the release bundle in `target/dist/`, from a set of every format built
//! for it (`target/dist/images`, apart from the user's `target/images`).

use std::fs;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::domain::artifacts::{self, ImageOptions};
use crate::domain::image::thousands;
use crate::domain::{dist, reproducible};
use crate::infra::files::{project_root, target_dir};

pub fn run() -> Result<()> {
    let manifest = fs::read_to_string(project_root().join("Cargo.toml"))?;
    let version = dist::version(&manifest)?;
    let out = target_dir().join("dist");
    let all = ImageOptions::everything();
    println!("building every format for {}", dist::name(&version));
    let built = artifacts::build(&all, &out.join("images"))?;
    let epoch = reproducible::source_date_epoch()?.unwrap_or(0);
    let bundle = dist::bundle(&built.dir, &version, epoch)?;
    // Written whole or not at all: a temporary file beside it, renamed over it.
    let path = out.join(format!("{}.tar", dist::name(&version)));
    let partial = out.join(format!(".{}.tar.partial", dist::name(&version)));
    fs::write(&partial, &bundle).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, &path).with_context(|| format!("renaming to {}", path.display()))?;
    let digest: String = Sha256::digest(&bundle).iter().map(|b| format!("{b:02x}")).collect();
    println!("{}: {} bytes, sha256 {digest}", path.display(), thousands(bundle.len() as u64));
    Ok(())
}
