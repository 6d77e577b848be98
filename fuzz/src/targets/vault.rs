//! Vault files read back from disk: the metadata (format, key check) and a
//! sealed entry. The input's first byte says which file it replaces.

use std::path::PathBuf;

use modelpub_node_agent::vault::{Vault, VaultKey};

use crate::Target;

const ENTRY: &str = "dataset";

pub struct VaultFiles {
    dir: tempfile::TempDir,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl VaultFiles {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let vault = Vault::create(&dir.path().join("v"), key())?;
        vault.put(ENTRY, b"rows of someone's private data")?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(vault.dir())? {
            let path = entry?.path();
            if path.is_file() {
                let bytes = std::fs::read(&path)?;
                files.push((path, bytes));
            }
        }
        files.sort();
        anyhow::ensure!(files.len() >= 2, "the vault holds {} files", files.len());
        Ok(Self { dir, files })
    }
}

fn key() -> VaultKey {
    VaultKey::from_bytes([42; 32])
}

impl Target for VaultFiles {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        (self.files.iter().enumerate())
            .map(|(i, (_, bytes))| {
                let mut seed = vec![i as u8];
                seed.extend_from_slice(bytes);
                seed
            })
            .collect()
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let Some((which, bytes)) = input.split_first() else {
            return Err("empty".into());
        };
        let which = *which as usize % self.files.len();
        for (i, (path, original)) in self.files.iter().enumerate() {
            let content = if i == which { bytes } else { original };
            std::fs::write(path, content).map_err(|e| e.to_string())?;
        }
        let vault = Vault::open(&self.dir.path().join("v"), key()).map_err(|e| e.to_string())?;
        vault.get(ENTRY).map(|_| ()).map_err(|e| e.to_string())
    }
}
