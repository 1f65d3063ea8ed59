//! The release: `dist`'s bundle unpacks into every artifact, `SHA256SUMS` and the guide,
//! `sha256sum -c` accepts it, and two clean builds give the same bundle; the GitHub workflows
//! that build it are valid workflow files (checked offline against the schema that
//! `check-jsonschema` carries, the one GitHub's own editor tooling uses).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::harness::*;
use crate::domain::artifacts::CHECKSUMS;
use crate::domain::dist;
use crate::domain::formats::Family;
use crate::infra::files;
use crate::tasks::test::{IMAGES_ENV, REBUILD_DIR};

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_bundle_unpacks_checks_and_rebuilds_the_same() {
    let first = env_dir(IMAGES_ENV);
    let bundle = dist::bundle(&first, "0.0.0-test", 0).unwrap();
    let rebuilt = dist::bundle(&first.with_file_name(REBUILD_DIR), "0.0.0-test", 0).unwrap();
    assert!(bundle == rebuilt, "two clean builds give different bundles");
    let scratch = scratch("dist");
    let tar = scratch_image(&scratch, "bundle.tar", &bundle);
    let status = Command::new("tar").arg("-xf").arg(&tar).current_dir(scratch.path()).status();
    assert!(status.unwrap().success(), "tar -xf");
    let top = scratch.join(&dist::name("0.0.0-test"));
    let check = Command::new("sha256sum").args(["-c", CHECKSUMS]).current_dir(&top).output();
    let check = check.unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", String::from_utf8_lossy(&check.stdout));
    let mut expected: Vec<String> =
        Family::every_artifact().map(|(family, format)| family.file_name(format)).collect();
    expected.extend([CHECKSUMS.to_string(), dist::GUIDE.to_string()]);
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(&top)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected);
}

/// `check-jsonschema` (PyPI), in a virtual environment of the project's own under `target/`,
/// installed on first use.
fn check_jsonschema() -> PathBuf {
    let venv = files::target_dir().join("tools").join("check-jsonschema");
    let program = venv.join("bin").join("check-jsonschema");
    if !program.exists() {
        let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
        assert!(made.success(), "python3 -m venv {}", venv.display());
        let pip = venv.join("bin").join("pip");
        let installed =
            Command::new(pip).args(["install", "--quiet", "check-jsonschema"]).status().unwrap();
        assert!(installed.success(), "pip install check-jsonschema");
    }
    program
}

/// Validates `workflow` against GitHub's workflow schema; returns whether it passed, and what
/// the checker said.
fn validate(checker: &Path, workflow: &Path) -> (bool, String) {
    let out = Command::new(checker)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(workflow)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned())
}

#[test]
#[ignore = "boot test: run with `cargo xtask test`"]
fn the_workflows_are_valid_github_actions_files() {
    let checker = check_jsonschema();
    let workflows = files::project_root().join(".github").join("workflows");
    for name in ["ci.yml", "release.yml"] {
        let (ok, said) = validate(&checker, &workflows.join(name));
        assert!(ok && said.contains("ok -- validation done"), "{name}: {said}");
    }
    // The checker refuses what GitHub would: a misspelt key.
    let scratch = scratch("workflows");
    let text = std::fs::read_to_string(workflows.join("ci.yml")).unwrap();
    let broken = scratch_image(&scratch, "broken.yml", text.replace("steps:", "stepz:").as_bytes());
    let (ok, said) = validate(&checker, &broken);
    assert!(!ok, "a workflow with `stepz` passed: {said}");
}
