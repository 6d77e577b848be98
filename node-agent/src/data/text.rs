//! Text corpora: a folder of files, or the Tiny Shakespeare speeches.

use std::path::{Path, PathBuf};

use super::{DataError, TextCorpus, TextDoc};

/// Every regular file under `dir` (recursively, in sorted path order) is a
/// document whose role is its path relative to `dir` (with `/`). Empty files
/// are skipped; symbolic links are not followed, so a link cannot pull data
/// from outside the folder into a vault.
pub fn load_text_dir(dir: &Path) -> Result<TextCorpus, DataError> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        if text.is_empty() {
            continue;
        }
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let role = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        docs.push(TextDoc { role, text });
    }
    if docs.is_empty() {
        return Err(DataError::NoText {
            path: dir.to_path_buf(),
        });
    }
    Ok(TextCorpus { docs })
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads Tiny Shakespeare: blank-line separated speeches, each starting
/// with a `NAME:` line. Each speech is a document with role `NAME` and the
/// speech's lines (without the name line) as text. A block whose first line
/// is not a `NAME:` line continues the previous speech.
pub fn load_shakespeare(path: &Path) -> Result<TextCorpus, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let corpus = parse_speeches(&bytes);
    if corpus.docs.is_empty() {
        return Err(DataError::NoText {
            path: path.to_path_buf(),
        });
    }
    Ok(corpus)
}

fn parse_speeches(bytes: &[u8]) -> TextCorpus {
    let mut docs: Vec<TextDoc> = Vec::new();
    let mut block: Vec<&[u8]> = Vec::new();
    let lines = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    for line in lines.chain(std::iter::once(&b""[..])) {
        if !line.iter().all(u8::is_ascii_whitespace) {
            block.push(line);
            continue;
        }
        if block.is_empty() {
            continue;
        }
        let first = block[0];
        let name = first
            .strip_suffix(b":")
            .filter(|n| !n.is_empty() && block.len() > 1);
        match (name, docs.last_mut()) {
            (Some(name), _) => docs.push(TextDoc {
                role: String::from_utf8_lossy(name).trim().to_string(),
                text: block[1..].join(&b'\n'),
            }),
            (None, Some(prev)) => {
                prev.text.push(b'\n');
                prev.text.extend(block.join(&b'\n'));
            }
            (None, None) => docs.push(TextDoc {
                role: String::new(),
                text: block.join(&b'\n'),
            }),
        }
        block.clear();
    }
    TextCorpus { docs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::repo_data_dir;

    #[test]
    fn speeches_become_docs_with_roles() {
        let c = parse_speeches(b"A:\nhello\nworld\n\nB:\nbye\r\n\n\nstray\n\nA:\nagain");
        let roles: Vec<_> = c.docs.iter().map(|d| d.role.as_str()).collect();
        assert_eq!(roles, vec!["A", "B", "A"]);
        assert_eq!(c.docs[0].text, b"hello\nworld");
        assert_eq!(c.docs[1].text, b"bye\nstray");
        assert_eq!(c.docs[2].text, b"again");
    }

    #[test]
    fn tiny_shakespeare_loads() {
        let c = load_shakespeare(&repo_data_dir().join("tinyshakespeare.txt")).unwrap();
        assert!(c.docs.len() > 5000, "{}", c.docs.len());
        assert_eq!(c.docs[0].role, "First Citizen");
        assert!(c.roles().len() > 50);
        assert!(c.total_bytes() > 900_000);
    }

    #[test]
    fn text_dir_recursive_sorted_and_empty_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "bee").unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "ay").unwrap();
        std::fs::write(dir.path().join("empty.txt"), "").unwrap();
        let c = load_text_dir(dir.path()).unwrap();
        let roles: Vec<_> = c.docs.iter().map(|d| d.role.as_str()).collect();
        assert_eq!(roles, vec!["b.txt", "sub/a.txt"]);

        let empty = tempfile::tempdir().unwrap();
        let e = load_text_dir(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no text"), "{e}");
        assert!(load_text_dir(&empty.path().join("nope")).is_err());
    }
}
