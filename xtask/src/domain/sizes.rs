//! Where a program's bytes go: the sizes of its symbols (functions and objects, after LTO: code
//! inlined into a caller counts as the caller's), by crate and by module, from an ELF that
//! kept its symbol table.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// Bytes per crate and per module (up to three path segments, e.g. `smoltcp::socket::tcp`),
/// largest first; and the symbols' total.
#[derive(Debug, Default, PartialEq)]
pub struct Sizes {
    pub crates: Vec<(String, u64)>,
    pub modules: Vec<(String, u64)>,
    pub total: u64,
}

/// Reads the sizes from `elf`: the symbols that take bytes in the file (not zeroed memory,
/// `.bss`: the card's buffers, the interrupt table).
pub fn of_elf(elf: &[u8]) -> Result<Sizes> {
    let file = object::File::parse(elf).context("reading the ELF")?;
    let in_file = |symbol: &object::Symbol| {
        let section = symbol.section_index().and_then(|index| file.section_by_index(index).ok());
        section.is_some_and(|section| {
            !matches!(
                section.kind(),
                SectionKind::UninitializedData | SectionKind::UninitializedTls
            )
        })
    };
    let symbols = file.symbols().filter(|s| {
        matches!(s.kind(), SymbolKind::Text | SymbolKind::Data)
            && s.size() > 0
            && s.is_definition()
            && in_file(s)
    });
    Ok(group(symbols.map(|s| (s.name().unwrap_or_default().to_string(), s.size()))))
}

/// Groups `(mangled name, size)` pairs.
pub fn group(symbols: impl IntoIterator<Item = (String, u64)>) -> Sizes {
    let mut crates = BTreeMap::<String, u64>::new();
    let mut modules = BTreeMap::<String, u64>::new();
    let mut total = 0;
    for (name, size) in symbols {
        let path = module_of(&name);
        let krate = path.split("::").next().unwrap_or_default().to_string();
        *crates.entry(krate).or_default() += size;
        *modules.entry(path).or_default() += size;
        total += size;
    }
    let sorted = |map: BTreeMap<String, u64>| {
        let mut list: Vec<(String, u64)> = map.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        list
    };
    Sizes { crates: sorted(crates), modules: sorted(modules), total }
}

/// The module a symbol belongs to: its demangled path's leading lower-case segments (types and
/// functions start with a capital or come last), at most three; `<T as Trait>::f` counts as
/// `T`'s. A name that is not Rust's (the assembly entry points) is `asm`.
pub fn module_of(mangled: &str) -> String {
    let Ok(demangled) = rustc_demangle::try_demangle(mangled) else {
        return "asm".to_string();
    };
    let text = format!("{demangled:#}");
    let text = text.trim_start_matches(['<', '&']).trim_start_matches("mut ");
    let segments: Vec<&str> = text.split("::").collect();
    let mut path = Vec::new();
    // The last segment is the function (or object) itself.
    for segment in &segments[..segments.len().saturating_sub(1)] {
        let plain =
            segment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain || path.len() == 3 {
            break;
        }
        path.push(*segment);
    }
    if path.is_empty() {
        path.push(segments[0].split(['<', ' ']).next().unwrap_or_default());
    }
    // Impls on primitive types (`<[u8; 4] as ...>`) and the panic entry (`__rustc::...`) are
    // the core library's.
    if path[0].starts_with(['[', '(', '*', '_']) || path[0].is_empty() {
        return "core".to_string();
    }
    path.join("::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_go_to_their_crate_and_module() {
        // Legacy and v0 manglings of real paths, and an assembly label.
        assert_eq!(
            module_of("_ZN7smoltcp6socket3tcp6Socket7process17h0123456789abcdefE"),
            "smoltcp::socket::tcp"
        );
        assert_eq!(module_of("_ZN5vm5123net7Network4poll17h0123456789abcdefE"), "vm512::net");
        assert_eq!(module_of("_RNvNtCs1234_5vm5123nic4find"), "vm512::nic");
        assert_eq!(module_of("pvh_start"), "asm");
        assert_eq!(
            module_of(
                "_ZN60_$LT$$u5b$u8$u3b$$u20$4$u5d$$u20$as$u20$core..fmt..Debug$GT$3fmt17h0123456789abcdefE"
            ),
            "core"
        );
        let sizes = group([
            ("_ZN5vm5123net7Network4poll17h0123456789abcdefE".to_string(), 100),
            ("_ZN5vm5123nic5e10005E10004send17h0123456789abcdefE".to_string(), 30),
            ("_ZN7smoltcp5iface9interface9Interface4poll17h0123456789abcdefE".to_string(), 500),
            ("pvh_start".to_string(), 7),
        ]);
        assert_eq!(sizes.total, 637);
        assert_eq!(
            sizes.crates,
            [("smoltcp".to_string(), 500), ("vm512".to_string(), 130), ("asm".to_string(), 7)]
        );
        assert_eq!(sizes.modules[1], ("vm512::net".to_string(), 100));
        assert_eq!(sizes.modules[2], ("vm512::nic::e1000".to_string(), 30));
    }
}
