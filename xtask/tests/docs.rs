//! The documentation as a reader meets it: a README short enough to read, opening with the two
//! commands that work on a fresh machine, and every relative link in it and in `docs/` leading
//! somewhere: a file that exists and, for `#anchor`, a heading of that file (GitHub's anchors).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The most words the README may have, counted as `wc -w` counts them.
const README_WORDS: usize = 1500;

/// The commands the README must open with.
const FIRST_COMMANDS: [&str; 2] = ["cargo xtask run", "cargo xtask test"];

/// The repository's root: the xtask's parent.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// README.md and every Markdown file in `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root().join("README.md"));
    pages
}

fn read(page: &Path) -> String {
    fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()))
}

/// The lines of `text` outside fenced code blocks (``` or ~~~), where a `#` is a comment and
/// brackets are code, not Markdown.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fence: Option<String> = None;
    let mut lines = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let marker: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
        match &fence {
            Some(open) if marker.starts_with(open.as_str()) && trimmed.trim() == marker => {
                fence = None
            }
            Some(_) => {}
            None if marker.len() >= 3 => fence = Some(marker),
            None => lines.push(line),
        }
    }
    lines
}

/// `line` without its code spans (`` `...` ``, any number of backticks), whose brackets are
/// not links.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The anchor GitHub gives a heading: lowercase, spaces to `-`, punctuation but `-` and `_`
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor the headings of `text` make, a repeated one numbered as GitHub does (`-1`, `-2`).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = Vec::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        let Some(title) =
            line.get(hashes..).filter(|t| (1..=6).contains(&hashes) && t.starts_with(' '))
        else {
            continue;
        };
        let slug = anchor(title.trim().trim_end_matches('#'));
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.push(if *count == 0 { slug } else { format!("{slug}-{count}") });
        *count += 1;
    }
    anchors
}

/// The targets of the links in `text` (`[text](target)`, `![alt](target)`, `[label]: target`)
/// outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        if let Some((label, target)) = line.trim_start().split_once("]: ")
            && label.starts_with('[')
        {
            targets.push(target.trim().to_string());
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let mut depth = 0;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => return true,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    false
                })
                .map_or(after.len(), |(i, _)| i);
            let inner = after[..end].trim();
            let target = match inner.strip_prefix('<') {
                Some(bracketed) => bracketed.split('>').next().unwrap_or(""),
                None => inner.split_whitespace().next().unwrap_or(""),
            };
            targets.push(target.to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// Whether `target` leaves the repository (a web address, mail).
fn external(target: &str) -> bool {
    ["http://", "https://", "mailto:"].iter().any(|scheme| target.starts_with(scheme))
}

/// What is wrong with each relative link of `page`: a file that does not exist, or an anchor no
/// heading of the Markdown file makes.
fn broken_links(page: &Path) -> Vec<String> {
    let root = root();
    let shown = |file: &Path| file.strip_prefix(&root).unwrap_or(file).display().to_string();
    let name = shown(page);
    let mut broken = Vec::new();
    for target in link_targets(&read(page)).into_iter().filter(|t| !external(t)) {
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() { page.to_path_buf() } else { page.with_file_name(path) };
        if path.is_empty() && fragment.is_none() || !file.exists() {
            broken.push(format!("{name}: ({target}): {} does not exist", shown(&file)));
            continue;
        }
        if let Some(fragment) = fragment
            && file.extension().is_some_and(|e| e == "md")
            && !anchors(&read(&file)).iter().any(|a| a == fragment)
        {
            let file = shown(&file);
            broken.push(format!("{name}: ({target}): no heading of {file} makes #{fragment}"));
        }
    }
    broken
}

#[test]
fn the_readme_is_at_most_1500_words() {
    let words = read(&root().join("README.md")).split_whitespace().count();
    assert!(words <= README_WORDS, "README.md has {words} words, over {README_WORDS}");
}

#[test]
fn the_readme_opens_with_the_commands_that_work_on_a_fresh_machine() {
    let readme = read(&root().join("README.md"));
    let fence = readme.find("```").expect("README.md has no code block");
    let first_section = readme.find("\n## ").unwrap_or(readme.len());
    assert!(fence < first_section, "README.md's first code block comes after its first section");
    let block = readme[fence + 3..].split("```").next().unwrap();
    for command in FIRST_COMMANDS {
        assert!(block.contains(command), "README.md's first commands lack `{command}`:{block}");
    }
}

#[test]
fn every_relative_link_leads_to_a_file_and_a_heading() {
    let broken: Vec<String> = pages().iter().flat_map(|page| broken_links(page)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_githubs_rule() {
    assert_eq!(anchor("libvirt (virt-install and virsh)"), "libvirt-virt-install-and-virsh");
    assert_eq!(anchor("The VHD's size"), "the-vhds-size");
    assert_eq!(anchor("Secure Boot, platform by platform"), "secure-boot-platform-by-platform");
    assert_eq!(anchor("`run`"), "run");
    assert_eq!(anchor("snake_case and Hyper-V"), "snake_case-and-hyper-v");
    let text = "# A\n```sh\n# not a heading\n```\n## A\n### B.\n";
    assert_eq!(anchors(text), ["a", "a-1", "b"]);
}

#[test]
fn links_in_code_are_not_links() {
    let text = "[a](x.md#y) `[b](code.md)` ![c](img.png \"title\")\n\
                ```\n[d](fenced.md)\n```\n[e]: ref.md\n[f](https://example.org) [g](<h (1).md>)\n";
    assert_eq!(
        link_targets(text),
        ["x.md#y", "img.png", "ref.md", "https://example.org", "h (1).md"]
    );
}
