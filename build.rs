//! Gives each image its own linker script. Runs on the host when `cargo xtask image` builds the
//! boot-sector crate for the 16-bit target.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bin=boot-sector=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bin=rom=-T{dir}/rom.ld");
    println!("cargo:rustc-link-arg-bin=loader=-T{dir}/loader.ld");
    // The PVH kernel: linked at 1 MiB, no page alignment in the file (the VMM copies segments
    // wherever they lie in it), no symbols, no build ID: small, and the same bytes every time.
    // `cargo xtask bench` builds the net kernel once more, elsewhere, with its symbols
    // (VM512_SYMBOLS), to say which crate and module its bytes belong to.
    let strip = std::env::var_os("VM512_SYMBOLS").is_none();
    for bin in ["pvh", "net-pvh"] {
        println!("cargo:rustc-link-arg-bin={bin}=-T{dir}/pvh.ld");
        println!("cargo:rustc-link-arg-bin={bin}=--nmagic");
        if strip {
            println!("cargo:rustc-link-arg-bin={bin}=--strip-all");
        }
        println!("cargo:rustc-link-arg-bin={bin}=--build-id=none");
    }
    // The UEFI program (lld-link): a timestamp derived from the content, not the clock, so that
    // two builds are bit for bit the same; and no PDB, whose GUID (in the program's debug
    // directory, and under /Brepro in its timestamp too) hashes the object files' absolute paths:
    // the same source built in another directory would differ.
    for bin in ["efi", "net-efi"] {
        println!("cargo:rustc-link-arg-bin={bin}=/Brepro");
        println!("cargo:rustc-link-arg-bin={bin}=/DEBUG:NONE");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=rom.ld");
    println!("cargo:rerun-if-changed=loader.ld");
    println!("cargo:rerun-if-changed=pvh.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VM512_SYMBOLS");
}
