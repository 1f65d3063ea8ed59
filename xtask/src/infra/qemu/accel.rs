//! Which accelerator QEMU runs the guest CPU with: KVM where `/dev/kvm` is usable, TCG otherwise,
//! or what `VM512_ACCEL` forces.

use std::fs;

use anyhow::{Result, bail};

/// Environment variable that forces an accelerator: `VM512_ACCEL=tcg cargo xtask test`.
pub const ACCEL_ENV: &str = "VM512_ACCEL";

/// How the guest CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// `VM512_ACCEL` (`kvm` or `tcg`) when set; otherwise KVM when `/dev/kvm` can be opened for
    /// reading and writing, TCG when not. Returns the choice and why it was made; refuses any
    /// other value of `VM512_ACCEL`, and `kvm` where KVM cannot be used.
    pub fn choose() -> Result<(Accel, String)> {
        Accel::choose_from(&std::env::var(ACCEL_ENV).unwrap_or_default(), kvm_usable())
    }

    fn choose_from(forced: &str, kvm: Result<(), String>) -> Result<(Accel, String)> {
        match (forced, kvm) {
            ("tcg", _) => Ok((Accel::Tcg, format!("{ACCEL_ENV}=tcg"))),
            ("kvm", Ok(())) => Ok((Accel::Kvm, format!("{ACCEL_ENV}=kvm"))),
            ("kvm", Err(why)) => bail!("{ACCEL_ENV}=kvm, but {why}; unset it to use TCG"),
            ("", Ok(())) => Ok((Accel::Kvm, "/dev/kvm is usable".into())),
            ("", Err(why)) => Ok((Accel::Tcg, why)),
            (other, _) => bail!(
                "{ACCEL_ENV} must be `kvm` or `tcg`, not `{other}`; unset it to use KVM when \
                 /dev/kvm is usable and TCG otherwise"
            ),
        }
    }

    /// The accelerator [`Accel::choose`] picks; TCG if `VM512_ACCEL` is invalid (the tasks
    /// refuse that before starting any VM).
    pub fn default_choice() -> Accel {
        Accel::choose().map_or(Accel::Tcg, |(accel, _)| accel)
    }

    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// TCG always; KVM too when this machine can use it.
pub fn available_accels() -> Vec<Accel> {
    let mut accels = vec![Accel::Tcg];
    if kvm_usable().is_ok() {
        accels.push(Accel::Kvm);
    }
    accels
}

/// Whether this user can use KVM, and if not, why.
pub fn kvm_usable() -> Result<(), String> {
    match fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(error) => Err(format!("no usable /dev/kvm ({error})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcg_and_kvm_are_accelerators_and_the_choice_says_why() {
        let usable = || Ok(());
        let unusable = || Err("no usable /dev/kvm (Permission denied)".to_string());
        let choose = |forced, kvm| Accel::choose_from(forced, kvm).map_err(|e| e.to_string());
        assert_eq!(choose("", usable()).unwrap(), (Accel::Kvm, "/dev/kvm is usable".into()));
        assert_eq!(choose("", unusable()).unwrap().1, "no usable /dev/kvm (Permission denied)");
        // Forcing TCG where KVM works must not claim that KVM is unusable.
        assert_eq!(choose("tcg", usable()).unwrap(), (Accel::Tcg, "VM512_ACCEL=tcg".into()));
        let error = choose("kvm", unusable()).unwrap_err();
        assert!(error.contains("Permission denied"), "{error}");
        let error = choose("bogus", usable()).unwrap_err();
        assert!(error.contains("must be `kvm` or `tcg`, not `bogus`"), "{error}");
    }
}
